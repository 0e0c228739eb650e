"""Parity of the ablation-ladder families with the official models (spec §11,
`tests/fixtures/official/ablations`): logits, every downsample and stage output, and the logits of
the (1,1)- and (3,5)-rolled and half-pixel-shifted inputs, within 1e-4 relative in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import checkpoints, models, ops
from tests.helpers import load_official_npz, nchw_to_nhwc, official_fixture, rel_err

PARITY_TOL = 1e-4
NANO = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10)
ABLATION_FAMILIES = {
    "blurpool3_nano": "convnext_blurpool",
    "ideal_lpf_nano": "convnext_ideal_lpf",
    "ideal_lpf_afln_nano": "convnext_ideal_lpf_afln",
    "afc_poly1x_nano": "convnext_afc_poly1x",
    "afc_nostem_nano": "convnext_afc_nostem",
    "afc_ln_c_nano": "convnext_afc_ln_c",
}
SIZES = ("96x96", "128x128")


@functools.cache
def _arrays(fixture: str) -> dict:
    return load_official_npz("ablations", f"{fixture}.npz")


def _state_dict(fixture: str) -> dict:
    out = {}
    for key, value in _arrays(fixture).items():
        kind, _, name = key.partition("/")
        if kind in ("param", "buffer"):
            out[name] = value
    return out


def test_every_fixture_variant_has_a_family():
    import json

    index = json.loads(official_fixture("ablations", "index.json").read_text())
    assert set(index["configs"]) == set(ABLATION_FAMILIES)
    assert set(ABLATION_FAMILIES.values()) <= set(models.FAMILIES)


@pytest.mark.parametrize("fixture", list(ABLATION_FAMILIES))
def test_ablation_matches_official(fixture):
    model = models.create(ABLATION_FAMILIES[fixture], **NANO)
    variables = checkpoints.from_torch_state_dict(_state_dict(fixture), model)
    apply = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))
    arrays = _arrays(fixture)
    errors = {}
    for size in SIZES:
        x = nchw_to_nhwc(arrays[f"input_nchw/{size}"])
        x_half = nchw_to_nhwc(arrays[f"input_halfpx_nchw/{size}"])
        # Our half-pixel shift must make the same input as the official subpixel_shift.
        errors[f"input_halfpx/{size}"] = rel_err(
            np.asarray(ops.fractional_shift(jnp.asarray(x), (-0.5, -0.5))), x_half
        )
        inputs = {
            "logits": x,
            "logits_roll1": np.roll(x, (1, 1), axis=(1, 2)),
            "logits_roll35": np.roll(x, (3, 5), axis=(1, 2)),
            "logits_halfpx": x_half,
        }
        for name, inp in inputs.items():
            logits, state = apply(variables, jnp.asarray(inp))
            errors[f"{name}/{size}"] = rel_err(np.asarray(logits), arrays[f"{name}/{size}"])
            if name != "logits":
                continue
            for key, value in state["intermediates"].items():
                ref = nchw_to_nhwc(arrays[f"{key}_nchw/{size}"])
                errors[f"{key}/{size}"] = rel_err(np.asarray(value[0]), ref)
    assert len(errors) == 2 * (1 + 4 + 8)
    print(fixture, f"max error {max(errors.values()):.1e}")
    bad = {k: e for k, e in errors.items() if not e <= PARITY_TOL}
    assert not bad, f"{fixture}: parity errors above {PARITY_TOL}: {bad}"


def test_upsampled_gelu_mlp_equals_gelu_between_ideal_resampling_at_2x():
    """The rung with no official counterpart: pointwise layers at 1x must equal the official
    AFC MLP's formulation with GELU (upsample, pwconv1, GELU, pwconv2 on the 2x grid, then
    ideal low-pass and every second sample)."""
    from afc_jax.layers import UpsampledGeluMLP, gelu_exact

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 10, 8))
    mlp = UpsampledGeluMLP()
    params = mlp.init(jax.random.PRNGKey(1), x)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jnp.ones_like(p), params)
    got = mlp.apply({"params": params}, x)
    w1, w2 = params["pwconv1"], params["pwconv2"]
    y = ops.ideal_upsample(x, 2) @ w1["kernel"] + w1["bias"]
    y = gelu_exact(y)
    want = ops.ideal_downsample(y @ w2["kernel"] + w2["bias"], 2)
    assert rel_err(np.asarray(got), np.asarray(want)) < 1e-5
    # ... and differ from GELU at 1x: the 2x grid changes the function.
    at_1x = gelu_exact(x @ w1["kernel"] + w1["bias"]) @ w2["kernel"] + w2["bias"]
    assert rel_err(np.asarray(at_1x), np.asarray(want)) > 1e-3


def test_upgelu_family_loads_an_afc_state_dict_without_block_polynomials():
    afc = models.create("convnext_afc", **NANO)
    upgelu = models.create("convnext_afc_upgelu", **NANO)
    sd = {k: v for k, v in _state_dict("afc_ln_c_nano").items() if ".mlp.act." not in k}
    variables = checkpoints.from_torch_state_dict(sd, upgelu)
    assert "act" not in variables["params"]["stages_0"]["blocks_0"]["mlp"]
    x = jnp.asarray(nchw_to_nhwc(_arrays("afc_ln_c_nano")["input_nchw/96x96"]))
    assert upgelu.apply(variables, x).shape == (2, 10)
    with pytest.raises(checkpoints.StateDictMismatchError, match="missing keys"):
        checkpoints.from_torch_state_dict(sd, afc)
