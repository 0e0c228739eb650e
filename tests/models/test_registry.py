"""Registry names, sizes and parameter tables of every family and size."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import models
from afc_jax.checkpoints.torch_import import abstract_params, torch_key_mapping
from tests.helpers import official_fixture, random_variables

FAMILY_OF_TABLE = {
    "afc_tiny": "convnext_afc_tiny",
    "baseline_circular_tiny": "convnext_baseline_circular_tiny",
    "aps_tiny": "convnext_aps_tiny",
    "convnext_tiny": "convnext_tiny",
}
# Published parameter counts of the original ConvNeXt at 1000 classes (millions).
CONVNEXT_PARAMS_M = {"tiny": 28.6, "small": 50.2, "base": 88.6, "large": 197.8, "xlarge": 350.2}


ABLATION_NAMES = (
    "convnext_blurpool",
    "convnext_ideal_lpf",
    "convnext_ideal_lpf_afln",
    "convnext_afc_poly1x",
    "convnext_afc_nostem",
    "convnext_afc_ln_c",
    "convnext_afc_upgelu",
)
# Rungs whose official state dict has exactly the parameters of a main family's.
SAME_KEYS_AS = {
    "convnext_blurpool_tiny": "baseline_circular_tiny",
    "convnext_ideal_lpf_tiny": "baseline_circular_tiny",
    "convnext_ideal_lpf_afln_tiny": "baseline_circular_tiny",
    "convnext_afc_poly1x_tiny": "afc_tiny",
    "convnext_afc_ln_c_tiny": "afc_tiny",
}


def test_registry_lists_every_family_and_size():
    names = models.available_models()
    assert set(ABLATION_NAMES) <= set(models.FAMILIES)
    assert len(models.FAMILIES) == 4 + len(ABLATION_NAMES)
    assert len(names) == len(models.FAMILIES) * (1 + len(models.SIZES))
    for family in models.FAMILIES:
        assert family in names
        for size in models.SIZES:
            assert f"{family}_{size}" in names


def count(model) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract_params(model)))


@pytest.mark.parametrize("size", list(CONVNEXT_PARAMS_M))
def test_original_convnext_parameter_counts_match_the_paper(size):
    millions = count(models.create(f"convnext_{size}")) / 1e6
    assert round(millions, 1) == CONVNEXT_PARAMS_M[size]


def test_afc_adds_only_polynomial_parameters():
    # AFC = ConvNeXt + per block (4C*3 coefs + 2 scales) + stem (C*3 + 2 scales + gamma).
    afc, base = count(models.create("convnext_afc_tiny")), count(models.create("convnext_tiny"))
    depths, dims = models.SIZES["tiny"]
    extra = sum(d * (4 * c * 3 + 2) for d, c in zip(depths, dims)) + dims[0] * 3 + 3
    assert afc - base == extra


@pytest.mark.parametrize("table", list(FAMILY_OF_TABLE))
def test_key_table_matches_the_official_tiny_state_dict(table):
    path = official_fixture("official_tiny_state_dict_keys.json")
    entries = json.loads(path.read_text())[table]
    official = {e["key"]: tuple(e["shape"]) for e in entries if e["kind"] == "parameter"}
    model = models.create(FAMILY_OF_TABLE[table])
    mapping = torch_key_mapping(model)
    assert {m.torch_key for m in mapping} == set(official)
    params = abstract_params(model)
    for m in mapping:
        leaf = params
        for k in m.flax_path:
            leaf = leaf[k]
        assert int(np.prod(leaf.shape)) == int(np.prod(official[m.torch_key])), m.torch_key


def _official_keys(table: str) -> set[str]:
    entries = json.loads(official_fixture("official_tiny_state_dict_keys.json").read_text())
    return {e["key"] for e in entries[table] if e["kind"] == "parameter"}


@pytest.mark.parametrize("name", list(SAME_KEYS_AS))
def test_ablation_key_tables_follow_their_parts(name):
    model = models.create(name)
    assert {m.torch_key for m in torch_key_mapping(model)} == _official_keys(SAME_KEYS_AS[name])


def test_afc_rungs_without_a_piece_drop_exactly_its_parameters():
    afc = {m.torch_key for m in torch_key_mapping(models.create("convnext_afc_tiny"))}
    nostem = {m.torch_key for m in torch_key_mapping(models.create("convnext_afc_nostem_tiny"))}
    upgelu = {m.torch_key for m in torch_key_mapping(models.create("convnext_afc_upgelu_tiny"))}
    stem_poly = {k for k in afc if k.startswith("downsample_layers.0.1.")}
    moved_norm = {"downsample_layers.0.3.weight", "downsample_layers.0.3.bias"}
    assert len(stem_poly) == 4
    assert nostem == (afc - stem_poly - moved_norm) | {
        "downsample_layers.0.2.weight",
        "downsample_layers.0.2.bias",
    }
    assert upgelu == {k for k in afc if ".mlp.act." not in k}


@pytest.mark.parametrize("name", ABLATION_NAMES)
def test_ablations_take_every_size_and_custom_widths(name):
    for size, (depths, dims) in models.SIZES.items():
        model = models.create(f"{name}_{size}", num_classes=7)
        assert (tuple(model.depths), tuple(model.dims)) == (depths, dims)
    model = models.create(name, depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), num_classes=3)
    out = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert out["params"]["head"]["kernel"].shape == (16, 3)


def test_bfloat16_compute_keeps_float32_params():
    model = models.create(
        "convnext_afc", depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=3, dtype=jnp.bfloat16
    )
    v = random_variables(model)
    assert {p.dtype for p in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.float32)}
    out = jax.jit(model.apply)(v, jnp.ones((1, 32, 32, 3)))
    assert out.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(out, np.float32)))


def test_drop_path_is_active_only_in_training():
    model = models.create(
        "convnext_baseline_circular",
        depths=(1, 1, 1, 1),
        dims=(8, 8, 8, 8),
        num_classes=3,
        drop_path_rate=0.5,
        layer_scale_init=1.0,
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    v = random_variables(model)
    apply = jax.jit(model.apply, static_argnames="train")
    np.testing.assert_array_equal(apply(v, x), apply(v, x))
    train = [apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(s)}) for s in (1, 2)]
    assert not np.allclose(train[0], train[1])
