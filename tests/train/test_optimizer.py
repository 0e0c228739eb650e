"""The optimisation recipe: schedule, weight-decay mask and the paper's defaults."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import models
from afc_jax.checkpoints.torch_import import _torch_shape, abstract_params, torch_key_mapping
from afc_jax.train.optimizer import (
    describe_run,
    learning_rate_schedule,
    make_optimizer,
    peak_learning_rate,
    weight_decay_mask,
)
from configs import digits, imagenet, tfds_small
from tests.helpers import official_fixture


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


def test_learning_rate_scales_linearly_with_the_effective_batch():
    c = imagenet.get_config()
    c.batch_size = 1024
    assert peak_learning_rate(c) == pytest.approx(1e-3)
    c.optim.grad_accum_steps = 4  # 1024 x 4 accumulated = the paper's 4096 per update
    assert peak_learning_rate(c) == pytest.approx(4e-3)


def official_schedule(base, final, epochs, niter_per_ep, warmup_epochs):
    """The official cosine_scheduler, written from its definition: numpy linspace warm-up from 0
    to base over warmup_epochs * niter_per_ep values, then final + (base - final) / 2
    (1 + cos(pi i / len)) for the remaining values."""
    warmup = np.linspace(0.0, base, warmup_epochs * niter_per_ep)
    iters = np.arange(epochs * niter_per_ep - len(warmup))
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate([warmup, cosine])


def test_schedule_is_the_official_one():
    c = imagenet.get_config()
    steps_per_epoch = 1281167 // 4096  # the paper's run: 312 updates per epoch
    sched = learning_rate_schedule(c, steps_per_epoch)
    want = official_schedule(4e-3, 1e-6, 300, 312, 20)
    assert len(want) == 93600
    steps = np.r_[0:20, 6230:6260, 50_000:50_010, 93_590:93_600]
    got = np.array([float(sched(s)) for s in steps])
    np.testing.assert_allclose(got, want[steps], rtol=2e-6, atol=1e-12)
    assert float(sched(6239)) == pytest.approx(4e-3, rel=1e-6)  # warm-up ends at the peak
    assert float(sched(10**6)) == pytest.approx(want[-1], rel=1e-5)  # held after the end
    values = np.array([float(sched(s)) for s in range(6240, 93600, 997)])
    assert np.all(np.diff(values) <= 1e-12), "cosine part must not increase"


def test_schedule_counts_optimizer_updates_under_accumulation():
    c = imagenet.get_config()
    c.batch_size = 1024
    c.optim.grad_accum_steps = 4
    sched = learning_rate_schedule(c, steps_per_epoch=40)  # 10 updates per epoch
    assert float(sched(199)) == pytest.approx(4e-3, rel=1e-5)  # end of 20 warm-up epochs
    assert float(sched(99)) == pytest.approx(4e-3 * 99 / 199, rel=1e-5)


def test_describe_run_states_the_paper_run():
    text = describe_run(imagenet.get_config(), 1281167 // 4096)
    for part in (
        "global batch 4096",
        "peak lr 0.004 ",
        "312 steps/epoch",
        "6240 warm-up steps",
        "93600 total steps",
        "EMA decay 0.9999",
        "weight decay 0.05",
        "grad clip none",
    ):
        assert part in text, (part, text)
    c = imagenet.get_config()
    c.batch_size, c.optim.grad_accum_steps = 1024, 4
    assert "global batch 4096 (1024 x 4 accumulated)" in describe_run(c, 1281167 // 1024)
    assert "312 steps/epoch" in describe_run(c, 1281167 // 1024)


OFFICIAL_GROUP_TABLES = {
    "afc_tiny": "convnext_afc_tiny",
    "baseline_circular_tiny": "convnext_baseline_circular_tiny",
    "aps_tiny": "convnext_aps_tiny",
    "convnext_tiny": "convnext_tiny",
}


def _leaf(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@pytest.mark.parametrize("table", list(OFFICIAL_GROUP_TABLES))
def test_weight_decay_groups_equal_the_official_ones(table):
    """The mask, read through the official state-dict names, is the official optimizer's
    decay / no-decay split (tests/fixtures/official/official_param_groups.json)."""
    groups = json.loads(official_fixture("official_param_groups.json").read_text())
    official = groups["families"][table]
    model = models.create(OFFICIAL_GROUP_TABLES[table], num_classes=1000)
    params = abstract_params(model)  # jax.eval_shape: nothing is compiled or allocated
    mask = weight_decay_mask(params)
    decayed = {m.torch_key for m in torch_key_mapping(model) if _leaf(mask, m.flax_path)}
    not_decayed = {m.torch_key for m in torch_key_mapping(model) if not _leaf(mask, m.flax_path)}
    assert decayed == set(official["decay"])
    assert not_decayed == set(official["no_decay"])
    assert len(decayed) == official["n_decay"]
    numel = sum(
        int(np.prod(_leaf(params, m.flax_path).shape))
        for m in torch_key_mapping(model)
        if _leaf(mask, m.flax_path)
    )
    assert numel == official["numel_decay"]
    if table == "afc_tiny":  # the polynomial coefficients are decayed, their scales not
        assert "stages.2.4.mlp.act.coef" in decayed
        assert "downsample_layers.0.1.residual.0.coef" in decayed
        assert "stages.2.4.mlp.act.in_scale" not in decayed


@pytest.mark.parametrize("family", sorted(models.FAMILIES))
def test_flax_leaves_have_more_than_one_dim_exactly_when_the_torch_ones_do(family):
    """Why the mask may apply the official rule to the Flax shapes: for every family (the
    ablation rungs too) each parameter's dimensionality is > 1 in Flax iff it is in torch, and
    the Flax leaves named `bias` are exactly the torch `*.bias` keys."""
    model = models.create(family, depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10)
    params = abstract_params(model)
    for m in torch_key_mapping(model):
        flax_shape = tuple(_leaf(params, m.flax_path).shape)
        torch_shape = _torch_shape(m.kind, flax_shape)
        assert (len(flax_shape) > 1) == (len(torch_shape) > 1), m.torch_key
        assert (m.flax_path[-1] == "bias") == m.torch_key.endswith(".bias"), m.torch_key


def test_weight_decay_mask_by_rule_on_any_tree():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones((4,))},
        "act": {"coef": jnp.ones((4, 3)), "in_scale": jnp.ones((1,))},
        "odd": {"bias": jnp.ones((2, 2)), "table": jnp.ones((5, 2)), "scalar": jnp.ones(())},
    }
    mask = weight_decay_mask(params)
    assert mask == {
        "conv": {"kernel": True, "bias": False},
        "act": {"coef": True, "in_scale": False},
        "odd": {"bias": False, "table": True, "scalar": False},
    }


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
