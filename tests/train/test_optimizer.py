"""The optimisation recipe: schedule, weight-decay mask and the paper's defaults."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import models
from afc_jax.train.optimizer import (
    learning_rate_schedule,
    make_optimizer,
    peak_learning_rate,
    weight_decay_mask,
)
from configs import digits, imagenet, tfds_small


def test_imagenet_defaults_are_the_paper_recipe():
    c = imagenet.get_config("model=convnext_afc_tiny")
    assert (c.num_epochs, c.optim.warmup_epochs) == (300, 20)
    assert (c.optim.base_lr, c.optim.base_batch_size, c.batch_size) == (4e-3, 4096, 4096)
    assert (c.optim.b1, c.optim.b2, c.optim.eps) == (0.9, 0.999, 1e-8)
    assert (c.optim.weight_decay, c.optim.min_lr, c.optim.ema_decay) == (0.05, 1e-6, 0.9999)
    assert c.model.drop_path_rate == 0.1
    a = c.augment
    assert (a.label_smoothing, a.mixup, a.cutmix, a.switch_prob) == (0.1, 0.8, 1.0, 0.5)
    assert a.randaugment and (a.randaugment_magnitude, a.randaugment_magnitude_std) == (9, 0.5)
    assert a.random_erasing == 0.25
    assert c.data.name == "imagenet2012" and c.data.image_size == 224


@pytest.mark.parametrize(
    "model",
    [
        "convnext_baseline_circular_small",
        "convnext_aps_base",
        "convnext_large",
        "convnext_afc_xlarge",
    ],
)
def test_imagenet_config_takes_every_family_and_size(model):
    c = imagenet.get_config(f"model={model}")
    models.parse_name(c.model.name)
    assert c.model.drop_path_rate > 0.1
    if model.endswith(("large", "xlarge")):
        assert c.mesh.fsdp == 8


def test_config_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown config argument 'modle'"):
        imagenet.get_config("modle=convnext_tiny")
    with pytest.raises(ValueError, match="sized model name"):
        imagenet.get_config("model=convnext_afc")
    assert tfds_small.get_config("dataset=cifar100,num_classes=100").data.num_classes == 100
    assert digits.get_config("model=convnext_baseline_circular").data.source == "digits"


def test_learning_rate_scales_linearly_with_batch():
    c = imagenet.get_config()
    c.batch_size = 1024
    assert peak_learning_rate(c) == pytest.approx(1e-3)


def test_schedule_warmup_then_cosine_to_min_lr():
    c = imagenet.get_config()
    steps_per_epoch = 10
    sched = learning_rate_schedule(c, steps_per_epoch)
    warm, total = 20 * steps_per_epoch, 300 * steps_per_epoch
    assert float(sched(0)) == 0.0
    assert float(sched(warm // 2)) == pytest.approx(2e-3, rel=1e-5)
    assert float(sched(warm)) == pytest.approx(4e-3, rel=1e-5)
    mid = warm + (total - warm) // 2
    assert float(sched(mid)) == pytest.approx((4e-3 + 1e-6) / 2, rel=1e-3)
    assert float(sched(total)) == pytest.approx(1e-6, rel=1e-4)
    values = np.array([float(sched(s)) for s in range(warm, total, 97)])
    assert np.all(np.diff(values) <= 1e-12), "cosine part must not increase"


def test_schedule_counts_optimizer_updates_under_accumulation():
    c = imagenet.get_config()
    c.optim.grad_accum_steps = 4
    sched = learning_rate_schedule(c, steps_per_epoch=40)  # 10 updates per epoch
    assert float(sched(200)) == pytest.approx(4e-3, rel=1e-5)  # end of 20 warm-up epochs


def test_weight_decay_only_on_kernels():
    model = models.create("convnext_afc", depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=3)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    mask = weight_decay_mask(params)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = {k for k, m in flat.items() if m}
    assert decayed and all(k.endswith("['kernel']") for k in decayed)
    for part in ("['bias']", "['scale']", "['gamma']", "['coef']", "['in_scale']", "['out_scale']"):
        names = [k for k in flat if k.endswith(part)]
        assert names and not any(flat[k] for k in names), part


def test_adamw_decays_kernels_and_not_the_rest():
    c = imagenet.get_config()
    c.optim.warmup_epochs = 0
    tx, _ = make_optimizer(c, steps_per_epoch=100)
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
    state = tx.init(params)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, state, params)
    assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0.0
    assert float(updates["dense"]["kernel"][0, 0]) < 0.0
