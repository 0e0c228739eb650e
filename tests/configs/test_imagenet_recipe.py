"""configs/imagenet.py against the official training recipe (official_recipe.json): every field
with an official counterpart equals the official effective value, for each family.

The few deliberate deviations are README "Deviations from the official recipe"; none of them is
a config value checked here.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest

from afc_jax.data import augment
from afc_jax.train.optimizer import (
    effective_batch_size,
    learning_rate_schedule,
    peak_learning_rate,
    schedule_steps,
)
from configs import imagenet
from tests.helpers import official_fixture

IMAGENET_TRAIN = 1_281_167  # ILSVRC2012 train images (TFDS imagenet2012 "train")
FAMILY_OF = {  # official recipe family -> afc-jax model name
    "convnext_tiny": "convnext_tiny",
    "baseline_circular_tiny": "convnext_baseline_circular_tiny",
    "afc_tiny": "convnext_afc_tiny",
    "aps_tiny": "convnext_aps_tiny",
}
TORCH_ADAMW_BETAS = (0.9, 0.999)  # opt_betas None -> torch.optim.AdamW's default


def recipe() -> dict:
    return json.loads(official_fixture("official_recipe.json").read_text())


def parse_rand_augment(spec: str) -> dict:
    """timm's RandAugment spec, e.g. "rand-m9-mstd0.5-inc1" (n defaults to 2)."""
    parts = spec.split("-")
    assert parts[0] == "rand", spec
    out = {"n": 2, "m": None, "mstd": 0.0, "inc": 0}
    for p in parts[1:]:
        key, value = re.match(r"([a-z]+)([\d.]+)", p).groups()
        out[key] = float(value) if "." in value else int(value)
    return out


def test_every_family_of_the_recipe_is_covered():
    assert set(recipe()["families"]) == set(FAMILY_OF)


@pytest.mark.parametrize("family", list(FAMILY_OF))
def test_imagenet_config_equals_the_official_effective_values(family):
    official = recipe()["families"][family]
    eff, derived = official["effective"], official["derived"]
    c = imagenet.get_config(f"model={FAMILY_OF[family]}")
    o, a, d, m = c.optim, c.augment, c.data, c.model

    # batch, schedule, optimizer
    assert effective_batch_size(c) == derived["global_batch"]["value"] == 4096
    assert eff["batch_size"] * eff["update_freq"] * derived["n_gpus"]["value"] == 4096
    assert c.num_epochs == eff["epochs"]
    assert o.warmup_epochs == eff["warmup_epochs"] and eff["warmup_steps"] == -1
    assert (
        peak_learning_rate(c)
        == pytest.approx(eff["lr"])
        == pytest.approx(derived["lr_peak"]["value"])
    )
    assert o.min_lr == eff["min_lr"]
    assert eff["scheduler"] == "cosine" and eff["opt"] == "adamw"
    assert (o.b1, o.b2) == (tuple(eff["opt_betas"]) if eff["opt_betas"] else TORCH_ADAMW_BETAS)
    assert o.eps == eff["opt_eps"]
    assert o.weight_decay == eff["weight_decay"]
    assert eff["weight_decay_end"] is None  # constant weight decay, as optax applies it
    assert o.grad_clip_norm == eff["clip_grad"]  # None: no clipping
    assert eff["layer_decay"] == 1.0  # no layer-wise lr decay (afc-jax has none)
    assert o.ema_decay == eff["model_ema_decay"] and eff["model_ema"] and eff["model_ema_eval"]
    assert m.dtype == ("bfloat16" if eff["use_amp"] else "float32")

    # the schedule of the paper's run, in optimizer updates
    steps = IMAGENET_TRAIN // c.batch_size
    per_epoch, warmup, total = schedule_steps(c, steps)
    assert per_epoch == derived["steps_per_epoch"]["value"] == 312
    assert warmup == derived["warmup_steps"]["value"] == 6240
    assert total == derived["total_steps"] == 93600
    assert float(learning_rate_schedule(c, steps)(warmup - 1)) == pytest.approx(eff["lr"])

    # model
    assert m.name == FAMILY_OF[family]
    assert m.drop_path_rate == eff["drop_path"]
    assert m.layer_scale_init == eff["layer_scale_init_value"]
    assert m.head_init_scale == eff["head_init_scale"]
    assert d.num_classes == eff["nb_classes"]
    assert c.seed == eff["seed"]

    # data and evaluation transform
    assert d.image_size == eff["input_size"]
    assert eff["crop_pct"] is None  # -> the default 224 / 256
    crop_pct = official["derived"]["eval_transform"]["value"]
    assert "int(224/0.875)=256" in crop_pct and d.eval_crop_pct == 0.875
    assert int(d.image_size / d.eval_crop_pct) == recipe()["paper_run_summary"]["eval_resize"]
    assert eff["imagenet_default_mean_and_std"]
    assert tuple(d.mean) == (0.485, 0.456, 0.406) and tuple(d.std) == (0.229, 0.224, 0.225)

    # augmentation
    assert eff["train_interpolation"] == "bicubic"  # afc_jax.data.augment.resize_bicubic
    assert a.random_resized_crop and tuple(a.crop_scale) == (0.08, 1.0)  # timm defaults
    assert tuple(a.crop_ratio) == pytest.approx((3 / 4, 4 / 3)) and a.hflip
    ra = parse_rand_augment(eff["aa"])
    assert a.randaugment and a.randaugment_layers == ra["n"]
    assert a.randaugment_magnitude == ra["m"] and a.randaugment_magnitude_std == ra["mstd"]
    assert ra["inc"] == 1 and augment.RANDAUGMENT_OP_NAMES[4] == "PosterizeIncreasing"
    assert inspect.signature(augment.rand_augment).parameters["prob"].default == 0.5
    assert a.color_jitter == eff["color_jitter"]  # inactive under RandAugment, as in timm 0.3
    assert a.random_erasing == eff["reprob"]
    assert (eff["remode"], eff["recount"], eff["resplit"]) == ("pixel", 1, False)  # as built in
    assert a.mixup == eff["mixup"] and a.cutmix == eff["cutmix"]
    assert eff["cutmix_minmax"] is None and eff["mixup_mode"] == "batch"
    assert a.mix_prob == eff["mixup_prob"] and a.switch_prob == eff["mixup_switch_prob"]
    assert a.label_smoothing == eff["smoothing"]


def test_the_recipe_summary_agrees_with_the_families():
    """The paper-run summary is what each family's effective values say (a guard on the
    fixture, so the per-family test above checks every number the summary states)."""
    r = recipe()
    s = r["paper_run_summary"]
    for fam in r["families"].values():
        eff = fam["effective"]
        for key in ("lr", "min_lr", "epochs", "warmup_epochs", "weight_decay", "drop_path"):
            assert eff[key] == s[key], key
        for key in ("mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "smoothing", "aa"):
            assert eff[key] == s[key], key
        for key in ("reprob", "remode", "recount", "input_size", "clip_grad", "use_amp"):
            assert eff[key] == s[key], key
