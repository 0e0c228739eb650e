"""State dict -> Flax variables: mapping, layouts and mismatch errors."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import numpy as np
import pytest

from afc_jax import checkpoints, models
from afc_jax.checkpoints.torch_import import abstract_params, torch_buffers
from afc_jax.checkpoints.torch_layout import LAYOUTS, layout_of
from tests.helpers import official_fixture, random_variables

NANO = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10)
FAMILIES = list(models.FAMILIES)


def random_state_dict(model, seed=0):
    """An official-layout state dict made by exporting random params."""
    return checkpoints.to_torch_state_dict(random_variables(model, seed=seed), model)


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_and_layouts(family):
    model = models.create(family, **NANO)
    sd = random_state_dict(model)
    variables = checkpoints.from_torch_state_dict(sd, model)
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], sd["head.weight"].T)
    conv = layout_of(model.family).block_dwconv.format(i=0, j=0) + ".weight"
    np.testing.assert_array_equal(
        variables["params"]["stages_0"]["blocks_0"]["dwconv"]["kernel"],
        np.transpose(sd[conv], (2, 3, 1, 0)),
    )
    back = checkpoints.to_torch_state_dict(variables, model)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


def test_afc_polynomial_coefficients_layout():
    model = models.create("convnext_afc", **NANO)
    sd = random_state_dict(model)
    coef = sd["stages.0.0.mlp.act.coef"]
    assert coef.shape == (64, 3, 1, 1)
    got = checkpoints.from_torch_state_dict(sd, model)["params"]
    np.testing.assert_array_equal(
        got["stages_0"]["blocks_0"]["mlp"]["act"]["coef"], coef[:, :, 0, 0]
    )
    np.testing.assert_array_equal(
        got["downsample_layers_0"]["poly"]["act"]["coef"],
        sd["downsample_layers.0.1.residual.0.coef"][:, :, 0, 0],
    )


def test_cached_filter_buffers_are_ignored_and_module_prefix_stripped():
    model = models.create("convnext_afc", **NANO)
    sd = random_state_dict(model)
    plain = checkpoints.from_torch_state_dict(sd, model)
    sd["stages.0.0.mlp.lpf.rect"] = np.ones((14, 8), np.float32)
    sd["downsample_layers.1.2.filt.filt"] = np.ones((32, 1, 1, 1), np.float32)
    sd = {"module." + k: v for k, v in sd.items()}
    imported = checkpoints.from_torch_state_dict(sd, model)
    chex.assert_trees_all_equal(imported, plain)  # the extras change nothing


def test_missing_unexpected_and_misshaped_keys_are_named():
    model = models.create("convnext_afc", **NANO)
    sd = random_state_dict(model)
    del sd["stages.2.1.gamma"]
    sd["stages.9.0.gamma"] = np.zeros(3, np.float32)
    sd["head.weight"] = np.zeros((1000, 64), np.float32)
    with pytest.raises(checkpoints.StateDictMismatchError) as info:
        checkpoints.from_torch_state_dict(sd, model)
    msg = str(info.value)
    assert "missing keys (1): stages.2.1.gamma" in msg
    assert "unexpected keys (1): stages.9.0.gamma" in msg
    assert "head.weight: got (1000, 64), model needs (10, 64)" in msg
    assert "num_classes" in msg


def test_wrong_family_is_reported():
    afc = models.create("convnext_afc", **NANO)
    base = models.create("convnext", **NANO)
    with pytest.raises(checkpoints.StateDictMismatchError, match="missing keys"):
        checkpoints.from_torch_state_dict(random_state_dict(base), afc)


def test_non_mapping_input():
    with pytest.raises(TypeError, match="read_torch_checkpoint"):
        checkpoints.from_torch_state_dict([1, 2], models.create("convnext", **NANO))


OFFICIAL_TINY = {
    "afc_tiny": "convnext_afc_tiny",
    "baseline_circular_tiny": "convnext_baseline_circular_tiny",
    "aps_tiny": "convnext_aps_tiny",
    "convnext_tiny": "convnext_tiny",
}


@pytest.mark.parametrize("table", list(OFFICIAL_TINY))
def test_export_has_every_key_and_shape_of_the_official_tiny_model(table):
    """Parameters and construction-time buffers (the circular baseline's four `*.filt.filt`),
    no lazily cached `.rect` masks: what `load_state_dict(strict=True)` needs."""
    entries = json.loads(official_fixture("official_tiny_state_dict_keys.json").read_text())
    official = {e["key"]: tuple(e["shape"]) for e in entries[table]}
    model = models.create(OFFICIAL_TINY[table], num_classes=1000)
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(model))
    exported = checkpoints.to_torch_state_dict({"params": zeros}, model)
    assert {k: tuple(v.shape) for k, v in exported.items()} == official
    buffers = {e["key"] for e in entries[table] if e["kind"] == "buffer"}
    assert set(torch_buffers(model)) == buffers


@pytest.mark.parametrize(
    "fixture,family",
    [
        (("models", "baseline_circular_nano.npz"), "convnext_baseline_circular"),
        (("ablations", "blurpool3_nano.npz"), "convnext_blurpool"),
        (("models", "afc_nano.npz"), "convnext_afc"),
    ],
)
def test_exported_buffers_equal_the_official_values(fixture, family):
    z = np.load(official_fixture(*fixture))
    official = {
        k[len("buffer/") :]: z[k]
        for k in z.files
        if k.startswith("buffer/") and not k.endswith(".rect")
    }
    model = models.create(family, **NANO)
    got = torch_buffers(model)
    assert set(got) == set(official)
    for k, v in official.items():
        np.testing.assert_array_equal(got[k], v)


def test_every_family_has_a_key_layout_that_names_its_stem_polynomial():
    assert set(LAYOUTS) == set(models.FAMILIES)
    for family in models.FAMILIES.values():
        assert (layout_of(family).stem_poly is not None) == family.stem_polynomial, family.name
    unknown = dataclasses.replace(models.CONVNEXT_AFC, name="my_family")
    with pytest.raises(KeyError, match="torch_layout.py"):
        layout_of(unknown)
