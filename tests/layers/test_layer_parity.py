"""Parity with the official single-layer fixtures (`tests/fixtures/official/layers`, spec §10).

One test id per fixture case of `index.json`. Cases marked "ok": true are compared with the
official outputs; cases marked "ok": false record inputs on which the official code failed, and
for those we check that our code works and follows the documented rule instead.

Tolerance: max|Δ| / max|ref| <= 1e-5 (float32 FFT round-off is ~3e-7 observed).

The fixtures are looked up when pytest collects this module (in `pytest_generate_tests`), never
at import; a missing fixture fails collection (it never skips).
"""

from __future__ import annotations

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import layers, ops
from tests.helpers import nchw_to_nhwc, official_fixture, rel_err

TOL = 1e-5
# Groups whose "ok" cases compare an ideal filter whose rule we can switch.
RULE_GROUPS = ("lpf_rfft", "blurpool_ideal")


# ----------------------------------------------------------------------------- collection


def _load_index() -> dict:
    return json.loads(official_fixture("layers", "index.json").read_text())


def _case_params(index, select):
    out = [pytest.param((group, name), id=f"{group}/{name}")
           for group, cases in index.items() for name, case in cases.items()
           if select(group, case)]
    if not out:  # a selector that matches nothing is a broken index, not a skip
        raise ValueError("tests/fixtures/official/layers/index.json has no case for a selector")
    return out


def pytest_generate_tests(metafunc):
    selectors = {
        "ok_case": lambda group, case: case.get("ok", False),
        "failed_case": lambda group, case: not case.get("ok", False),
        "rule_case": lambda group, case: case.get("ok", False) and group in RULE_GROUPS,
    }
    for argname, select in selectors.items():
        if argname in metafunc.fixturenames:
            metafunc.parametrize(argname, _case_params(_load_index(), select))


@functools.cache
def _arrays(group: str) -> dict[str, np.ndarray]:
    path = official_fixture("layers", f"{group}.npz")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@functools.lru_cache(maxsize=1)
def _index() -> dict:
    return _load_index()


def _case(group: str, name: str):
    """(config, {suffix: array}) of one case; suffixes are "input", "output", "param.weight"."""
    prefix = f"{name}__"
    arrays = {k[len(prefix):]: v for k, v in _arrays(group).items() if k.startswith(prefix)}
    return _index()[group][name]["config"], arrays


def _to_nhwc(x, layout: str):
    return nchw_to_nhwc(x) if layout in ("NCHW", "channels_first") else np.asarray(x)


def _official_mask(n: int, cutoff: float) -> np.ndarray:
    """The official rule from spec §2: keep |k| <= floor(N c / 2); if 4 | N also drop +-lo."""
    k = np.arange(n)
    k = np.abs(np.where(k <= n // 2, k, k - n))
    lo = math.floor(n * cutoff / 2)
    keep = (k <= lo) & ((n % 4 != 0) | (k != lo))
    return keep.astype(np.float64)


def _rect(h: int, w: int, mask_1d) -> np.ndarray:
    """(H, W//2 + 1) rfft-layout outer product of a per-axis mask."""
    return np.outer(mask_1d(h), mask_1d(w)[: w // 2 + 1])


def _poly_params(arrays, prefix=""):
    coef = arrays[f"{prefix}coef"]
    return {"coef": jnp.asarray(coef.reshape(coef.shape[0], 3)),
            "in_scale": jnp.asarray(arrays[f"{prefix}in_scale"]),
            "out_scale": jnp.asarray(arrays[f"{prefix}out_scale"])}


# ----------------------------------------------------------------------------- runners
# Each runner returns [(label, ours NHWC, reference NHWC), ...].


def _run_lpf_rfft(cfg, a, rule="official"):
    x = nchw_to_nhwc(a["input"])
    return [(rule, ops.ideal_lowpass(jnp.asarray(x), cfg["cutoff"], rule=rule),
             nchw_to_nhwc(a["output"]))]


def _run_upsample_rfft(cfg, a):
    x = nchw_to_nhwc(a["input"])
    return [("", ops.ideal_upsample(jnp.asarray(x), cfg["up"]), nchw_to_nhwc(a["output"]))]


def _run_blurpool_ideal(cfg, a, rule="official"):
    assert cfg["pad_type"] == "circular" and not cfg["scale_l2"]
    pool = layers.IdealBlurPool(cfg["stride"], cutoff=cfg["cutoff"], filter_rule=rule)
    got = pool.apply({}, jnp.asarray(nchw_to_nhwc(a["input"])))
    return [(rule, got, nchw_to_nhwc(a["output"]))]


def _run_layer_norm(cfg, a):
    layout = cfg["data_format"]
    norm = layers.LayerNorm(cfg["normalization_type"], epsilon=cfg["eps"])
    params = {"scale": jnp.asarray(a["param.weight"]), "bias": jnp.asarray(a["param.bias"])}
    got = jax.jit(norm.apply)({"params": params}, jnp.asarray(_to_nhwc(a["input"], layout)))
    return [("", got, _to_nhwc(a["output"], layout))]


def _run_poly_act_per_channel(cfg, a):
    layout = cfg["data_format"]
    got = layers.PolynomialActivation().apply(
        {"params": _poly_params(a, "param.")}, jnp.asarray(_to_nhwc(a["input"], layout)))
    return [("", got, _to_nhwc(a["output"], layout))]


def _run_lpf_poly_act_per_channel(cfg, a):
    layout = cfg["data_format"]
    x = jnp.asarray(_to_nhwc(a["input"], layout))
    h, w = x.shape[-3], x.shape[-2]
    # The cached official filter is the official rule; both rules agree at these sizes.
    np.testing.assert_array_equal(
        a["param.lpf.rect"], _rect(h, w, lambda n: _official_mask(n, cfg["cutoff"])))
    for n in (h, w):
        np.testing.assert_array_equal(ops.lowpass_mask_1d(n, cfg["cutoff"], rule="strict"),
                                      ops.lowpass_mask_1d(n, cfg["cutoff"], rule="official"))
    out = []
    for rule in ("official", "strict"):
        act = layers.LowpassPolynomialActivation(cutoff=cfg["cutoff"], filter_rule=rule)
        got = act.apply({"params": _poly_params(a, "param.")}, x)
        out.append((rule, got, _to_nhwc(a["output"], layout)))
    return out


def _upsample_mask(n: int) -> np.ndarray:
    """Spec §3: on the 2N grid keep |k| < N/2, weight 1/2 on |k| = N/2 (N even)."""
    k = np.arange(2 * n)
    k = np.abs(np.where(k <= n, k, k - 2 * n))
    return np.where(2 * k < n, 1.0, np.where(2 * k == n, 0.5, 0.0))


def _run_aalmlp(cfg, a):
    assert cfg["input_layout"] == "NHWC" and cfg["expand_ratio"] == 4
    x = jnp.asarray(a["input"])
    h, w = x.shape[-3], x.shape[-2]
    np.testing.assert_array_equal(a["param.upsample.recon_filter.rect"],
                                  _rect(2 * h, 2 * w, lambda m: _upsample_mask(m // 2)))
    np.testing.assert_array_equal(a["param.lpf.rect"],
                                  _rect(2 * h, 2 * w, lambda m: _official_mask(m, 0.5)))
    params = {
        "pwconv1": {"kernel": jnp.asarray(a["param.pwconv1.weight"].T),
                    "bias": jnp.asarray(a["param.pwconv1.bias"])},
        "act": _poly_params(a, "param.act."),
        "pwconv2": {"kernel": jnp.asarray(a["param.pwconv2.weight"].T),
                    "bias": jnp.asarray(a["param.pwconv2.bias"])},
    }
    out = []
    for rule in ("strict", "official"):
        mlp = layers.AliasFreeMLP(filter_rule=rule)
        out.append((rule, jax.jit(mlp.apply)({"params": params}, x), a["output"]))
    return out


def _run_apspool(cfg, a):
    assert cfg["stride"] == 2 and cfg["filt_size"] == 1
    x = jnp.asarray(nchw_to_nhwc(a["input"]))
    y, state = layers.APSPool(stride=cfg["stride"]).apply({}, x, mutable=["intermediates"])
    (index,) = state["intermediates"]["polyphase_index"]
    np.testing.assert_array_equal(np.asarray(index), a["polyphase_index"])
    # A selection: bit-exact.
    np.testing.assert_array_equal(np.asarray(y), nchw_to_nhwc(a["output"]))
    return [("", y, nchw_to_nhwc(a["output"]))]


def _run_subpixel_shift_up2(cfg, a):
    # Official subpixel_shift(x, up, shift_x, shift_y): shift_x moves rows (H) and content moves
    # towards lower indices, i.e. our fractional_shift by (-shift_x / up, -shift_y / up).
    up = cfg["up"]
    shift = (-cfg["shift_x"] / up, -cfg["shift_y"] / up)
    got = _traced_shift(jnp.asarray(nchw_to_nhwc(a["input"])), *map(jnp.float32, shift))
    return [("", got, nchw_to_nhwc(a["output"]))]


_traced_shift = jax.jit(lambda x, dy, dx: ops.fractional_shift(x, (dy, dx)))


RUNNERS = {
    "lpf_rfft": _run_lpf_rfft,
    "upsample_rfft": _run_upsample_rfft,
    "blurpool_ideal": _run_blurpool_ideal,
    "layer_norm": _run_layer_norm,
    "poly_act_per_channel": _run_poly_act_per_channel,
    "lpf_poly_act_per_channel": _run_lpf_poly_act_per_channel,
    "aalmlp": _run_aalmlp,
    "apspool": _run_apspool,
    "subpixel_shift_up2": _run_subpixel_shift_up2,
}


# ----------------------------------------------------------------------------- tests


def test_parity(ok_case):
    group, name = ok_case
    if group not in RUNNERS:
        pytest.fail(f"no runner for fixture group {group!r}: add one to RUNNERS")
    cfg, arrays = _case(group, name)
    for label, got, want in RUNNERS[group](cfg, arrays):
        chex.assert_shape(got, want.shape)
        err = rel_err(got, want)
        assert err <= TOL, f"{group}/{name} {label}: relative error {err:.3g}"


def test_filter_rules(rule_case):
    """The official rule matches every case; the strict one exactly where the masks agree.

    The cached official filter (`rect`) is also checked against the documented rule.
    """
    group, name = rule_case
    cfg, arrays = _case(group, name)
    n = arrays["input"].shape[-1]
    assert arrays["input"].shape[-2] == n
    cutoff = cfg["cutoff"]
    np.testing.assert_array_equal(arrays["rect"], _rect(n, n, lambda m: _official_mask(m, cutoff)))
    np.testing.assert_array_equal(arrays["rect"],
                                  ops.lowpass_mask_2d(n, n, cutoff, rule="official"))
    masks_agree = np.array_equal(ops.lowpass_mask_1d(n, cutoff, rule="strict"),
                                 ops.lowpass_mask_1d(n, cutoff, rule="official"))
    (_, got, want), = RUNNERS[group](cfg, arrays, rule="strict")
    err = rel_err(got, want)
    if masks_agree:
        assert err <= TOL, f"strict rule should match at N={n}, cutoff={cutoff}: {err:.3g}"
    else:
        assert err > 1e-3, f"strict rule unexpectedly matches at N={n}, cutoff={cutoff}"


def test_strict_and_official_rules_differ_on_the_expected_fixtures():
    """The documented differences among the fixtures: c0.75 at N=12, 28; stride 4 at N=20, 28."""
    index = _index()
    differing = set()
    for group in RULE_GROUPS:
        for name, case in index[group].items():
            if not case.get("ok"):
                continue
            n = case["arrays"]["input"][-1]
            c = case["config"]["cutoff"]
            if not np.array_equal(ops.lowpass_mask_1d(n, c, rule="strict"),
                                  ops.lowpass_mask_1d(n, c, rule="official")):
                differing.add(f"{group}/{name}")
    assert differing == {"lpf_rfft/c0.75_N12", "lpf_rfft/c0.75_N28",
                         "blurpool_ideal/s4_c0.25_N20", "blurpool_ideal/s4_c0.25_N28"}


def _failed_lpf_nonsquare(cfg):
    """Official LPF_RFFT read only the width; ours filters each axis by its own length."""
    shape = cfg["input_shape"]  # NCHW
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x_nhwc = nchw_to_nhwc(x)
    h, w = shape[-2], shape[-1]
    for rule in ("strict", "official"):
        got = ops.ideal_lowpass(jnp.asarray(x_nhwc), cfg["cutoff"], rule=rule)
        mask = np.outer(ops.lowpass_mask_1d(h, cfg["cutoff"], rule=rule),
                        ops.lowpass_mask_1d(w, cfg["cutoff"], rule=rule))
        if rule == "official":
            np.testing.assert_array_equal(mask, np.outer(_official_mask(h, cfg["cutoff"]),
                                                         _official_mask(w, cfg["cutoff"])))
        spec = np.fft.fft2(x_nhwc.astype(np.float64), axes=(-3, -2)) * mask[:, :, None]
        want = np.fft.ifft2(spec, axes=(-3, -2)).real
        assert rel_err(got, want) <= TOL, rule


def _failed_blurpool_small(cfg):
    """Official ideal BlurPool crashed on a 4x4 map with stride 4; ours returns a 1x1 map.

    The strict rule keeps only the mean there (|k| < 4 / 8); the official rule keeps nothing
    (lo = 0 and 4 | N drops it), so with `rule="official"` the output is 0.
    """
    x = np.random.default_rng(1).standard_normal((2, 4, 4, 4)).astype(np.float32)
    stride = cfg["stride"]
    got = layers.IdealBlurPool(stride, cutoff=cfg["cutoff"]).apply({}, jnp.asarray(x))
    chex.assert_shape(got, (2, 1, 1, 4))
    assert rel_err(got, x.mean(axis=(1, 2), keepdims=True)) <= TOL
    official = layers.IdealBlurPool(stride, cutoff=cfg["cutoff"], filter_rule="official")
    np.testing.assert_allclose(np.asarray(official.apply({}, jnp.asarray(x))), 0.0, atol=1e-6)


FAILED_HANDLERS = {
    ("lpf_rfft", "c0.5_H8_W16_nonsquare"): _failed_lpf_nonsquare,
    ("blurpool_ideal", "s4_c0.25_N4"): _failed_blurpool_small,
}


def test_official_failures_work_here(failed_case):
    group, name = failed_case
    if (group, name) not in FAILED_HANDLERS:
        pytest.fail(f"new failing official case {group}/{name}: add a check to FAILED_HANDLERS")
    cfg = _index()[group][name]["config"]
    FAILED_HANDLERS[(group, name)](cfg)
