"""The public filters (`afc_jax.ops.filters`, spec §2-§4): ideal low-pass, up/downsampling,
resizing, the fine-grid map and fractional shifts, by every implementation and layout.

Every property is checked against an independent float64 NumPy reference (full complex FFTs,
masks built from exact fractions) or an algebraic identity, and the implementations ("fft",
"matrix", both layouts) against each other; the parity with the official fixtures lives in
`tests/layers/test_layer_parity.py`.

Tolerance: relative error max|Δ| / max|ref| <= 1e-5 in float32 (float32 FFT round-off is about
3e-7 at these sizes), 1e-12 in float64.
"""

from __future__ import annotations

from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afc_jax import ops
from afc_jax.ops import filter_matrices, filters
from tests.helpers import reference_mask_1d, rel_err, signed_frequencies

TOL = 1e-5
SETTINGS = settings(max_examples=20, deadline=None)
CUTOFFS = (Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(3, 4))
RULES = ("strict", "official")


# ----------------------------------------------------------------------------- references


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ref_lowpass(x, cutoff, rule="strict") -> np.ndarray:
    """float64 ideal low-pass of an (..., H, W, C) array; cutoff a Fraction or (cy, cx) pair."""
    cy, cx = cutoff if isinstance(cutoff, tuple) else (cutoff, cutoff)
    x = np.asarray(x, np.float64)
    h, w = x.shape[-3], x.shape[-2]
    mask = np.outer(reference_mask_1d(h, cy, rule), reference_mask_1d(w, cx, rule))[:, :, None]
    y = np.fft.ifft2(np.fft.fft2(x, axes=(-3, -2)) * mask, axes=(-3, -2))
    assert np.max(np.abs(y.imag)) < 1e-9 * max(1.0, np.max(np.abs(y.real)))
    return y.real


def _ref_upsample_axis(spec, n: int, f: int, axis: int):
    """Zero-pads a full spectrum axis from n to f*n bins, splitting an even axis' Nyquist."""
    spec = np.moveaxis(spec, axis, 0)
    out = np.zeros((f * n,) + spec.shape[1:], complex)
    for k in range(n):
        s = k if k <= n // 2 else k - n
        if n % 2 == 0 and k == n // 2:
            out[n // 2] += spec[k] / 2
            out[f * n - n // 2] += spec[k] / 2
        else:
            out[s % (f * n)] = spec[k]
    return np.moveaxis(out * f, 0, axis)


def ref_upsample(x, f: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    h, w = x.shape[-3], x.shape[-2]
    spec = np.fft.fft2(x, axes=(-3, -2))
    spec = _ref_upsample_axis(spec, h, f, -3)
    spec = _ref_upsample_axis(spec, w, f, -2)
    y = np.fft.ifft2(spec, axes=(-3, -2))
    assert np.max(np.abs(y.imag)) < 1e-9 * max(1.0, np.max(np.abs(y.real)))
    return y.real


def ref_shift(x, dy: float, dx: float) -> np.ndarray:
    """Phase ramp exp(-2 pi i k d / N); an even axis' Nyquist bin is multiplied by cos(pi d)."""
    x = np.asarray(x, np.float64)
    h, w = x.shape[-3], x.shape[-2]

    def ramp(n, d):
        k = signed_frequencies(n)
        r = np.exp(-2j * np.pi * k * d / n)
        if n % 2 == 0:
            r[n // 2] = np.cos(np.pi * d)
        return r

    factor = ramp(h, dy)[:, None, None] * ramp(w, dx)[None, :, None]
    y = np.fft.ifft2(np.fft.fft2(x, axes=(-3, -2)) * factor, axes=(-3, -2))
    assert np.max(np.abs(y.imag)) < 1e-9 * max(1.0, np.max(np.abs(y.real)))
    return y.real


def band_limit(x):
    """Removes the Nyquist bin of even axes (strict low-pass at cutoff 1), nothing else."""
    return ops.ideal_lowpass(jnp.asarray(x), 1.0, rule="strict")


# ----------------------------------------------------------------------------- strategies
# Shapes come from small pools shared by every test so that XLA compiles each op only a few
# times (a fresh FFT shape costs ~0.3 s on CPU); values come from a drawn seed. The pools cover
# odd/even, non-square, N % 4 == 0 with a fractional boundary (12, 20), size-1 axes and
# leading batch dims.
SHAPES = ((1, 1, 1), (12, 7, 2), (2, 5, 20, 1), (8, 9, 3), (2, 6, 6, 1), (1, 4, 2))
UP_SHAPES = ((3, 4, 2), (2, 6, 5, 1), (1, 2, 1))
SHIFT_SHAPES = ((12, 7, 2), (2, 5, 8, 1), (6, 6, 3), (1, 3, 1))

shapes = st.sampled_from(SHAPES)
seeds = st.integers(0, 2**16)

_upsample = jax.jit(ops.ideal_upsample, static_argnums=1)
_traced_shift = jax.jit(lambda x, dy, dx: ops.fractional_shift(x, (dy, dx)))


def shift(x, dy, dx):
    """Fractional shift with traced amounts (one compile per shape)."""
    return _traced_shift(jnp.asarray(x), jnp.float32(dy), jnp.float32(dx))


# ----------------------------------------------------------------------------- ideal_lowpass


def test_lowpass_rejects_non_spatial_input():
    with pytest.raises(ValueError):
        ops.ideal_lowpass(jnp.zeros((4, 4)), 0.5)




def _roll(a, sy, sx):
    return np.roll(np.asarray(a), (sy, sx), axis=(-3, -2))


@SETTINGS
@given(shapes, st.sampled_from(CUTOFFS), st.sampled_from(RULES), seeds)
def test_lowpass_matches_float64_reference(shape, cutoff, rule, seed):
    x = _rand(shape, seed)
    got = ops.ideal_lowpass(jnp.asarray(x), float(cutoff), rule=rule)
    chex.assert_shape(got, shape)
    chex.assert_type(got, jnp.float32)
    assert rel_err(got, ref_lowpass(x, cutoff, rule)) <= TOL


@pytest.mark.parametrize("rule", RULES)
def test_lowpass_per_axis_cutoffs_on_nonsquare_maps(rule):
    """Each axis follows its own length and cutoff (the official code reads only the width)."""
    x = _rand((2, 12, 20, 2), 1)
    for cy, cx in [(Fraction(1, 2), Fraction(1, 2)), (Fraction(3, 4), Fraction(1, 4)),
                   (Fraction(1, 3), Fraction(1, 2))]:
        got = ops.ideal_lowpass(jnp.asarray(x), (float(cy), float(cx)), rule=rule)
        assert rel_err(got, ref_lowpass(x, (cy, cx), rule)) <= TOL


@SETTINGS
@given(shapes, st.sampled_from(CUTOFFS), st.floats(-3, 3), st.floats(-3, 3), seeds)
def test_lowpass_is_linear(shape, cutoff, a, b, seed):
    x, y = _rand(shape, seed), _rand(shape, seed + 1)
    c = float(cutoff)
    lhs = np.asarray(ops.ideal_lowpass(jnp.asarray(a * x + b * y), c))
    rhs = a * np.asarray(ops.ideal_lowpass(jnp.asarray(x), c)) + b * np.asarray(
        ops.ideal_lowpass(jnp.asarray(y), c)
    )
    assert np.max(np.abs(lhs - rhs)) <= TOL * max(1.0, np.max(np.abs(rhs)))


@SETTINGS
@given(shapes, st.sampled_from(CUTOFFS), st.sampled_from(RULES), seeds)
def test_lowpass_is_idempotent(shape, cutoff, rule, seed):
    once = ops.ideal_lowpass(jnp.asarray(_rand(shape, seed)), float(cutoff), rule=rule)
    twice = ops.ideal_lowpass(once, float(cutoff), rule=rule)
    assert np.max(np.abs(np.asarray(twice - once))) <= TOL * max(1.0, np.max(np.abs(once)))


@SETTINGS
@given(shapes, st.sampled_from(CUTOFFS), st.integers(-30, 30), st.integers(-30, 30), seeds)
def test_lowpass_commutes_with_integer_roll(shape, cutoff, sy, sx, seed):
    x = _rand(shape, seed)
    a = ops.ideal_lowpass(jnp.asarray(_roll(x, sy, sx)), float(cutoff))
    b = _roll(ops.ideal_lowpass(jnp.asarray(x), float(cutoff)), sy, sx)
    assert np.max(np.abs(np.asarray(a) - b)) <= TOL * max(1.0, np.max(np.abs(b)))


def test_lowpass_bfloat16_returns_bfloat16_computed_in_float32():
    x = jnp.asarray(_rand((2, 12, 7, 2), 5), jnp.bfloat16)
    got = ops.ideal_lowpass(x, 0.5)
    chex.assert_type(got, jnp.bfloat16)
    ref = np.asarray(ops.ideal_lowpass(x.astype(jnp.float32), 0.5))
    got32 = np.asarray(got.astype(jnp.float32))
    # Only the final rounding to bfloat16 (8 significant bits) separates the two.
    assert np.all(np.abs(got32 - ref) <= 2.0**-8 * np.abs(ref) + 1e-7)
    assert rel_err(ref, ref_lowpass(np.asarray(x.astype(jnp.float32)), Fraction(1, 2))) <= TOL


def test_lowpass_float64_under_x64():
    x = np.random.default_rng(6).standard_normal((2, 13, 16, 2))
    with jax.enable_x64(True):
        for rule in RULES:
            got = ops.ideal_lowpass(jnp.asarray(x, jnp.float64), (0.75, 1 / 3), rule=rule)
            assert got.dtype == jnp.float64
            ref = ref_lowpass(x, (Fraction(3, 4), Fraction(1, 3)), rule)
            assert rel_err(np.asarray(got), ref) <= 1e-12


def test_lowpass_is_jittable():
    x = _rand((12, 7, 2), 7)
    got = jax.jit(lambda a: ops.ideal_lowpass(a, 0.5))(jnp.asarray(x))
    assert rel_err(got, ref_lowpass(x, Fraction(1, 2))) <= TOL


# ----------------------------------------------------------------------------- resampling


@SETTINGS
@given(st.sampled_from(UP_SHAPES), st.sampled_from([2, 3]), seeds)
def test_upsample_matches_reference_and_keeps_samples(shape, f, seed):
    x = _rand(shape, seed)
    up = _upsample(jnp.asarray(x), f)
    h, w = shape[-3], shape[-2]
    chex.assert_shape(up, shape[:-3] + (f * h, f * w, shape[-1]))
    assert rel_err(up, ref_upsample(x, f)) <= TOL
    # Exact for any x: the coarse samples survive.
    assert rel_err(up[..., ::f, ::f, :], x) <= TOL
    # The mean (DC) is unchanged.
    np.testing.assert_allclose(
        np.mean(np.asarray(up), axis=(-3, -2)), np.mean(x, axis=(-3, -2)), atol=1e-5
    )


@SETTINGS
@given(st.sampled_from(UP_SHAPES), st.sampled_from([2, 3]), seeds)
def test_downsample_inverts_upsample_on_band_limited_input(shape, f, seed):
    """For even N, upsampling splits the Nyquist bin between +-N/2 and the 1/f low-pass then
    removes both halves: down(up(x)) == x only for x without Nyquist content; for any x it is
    lowpass(x, 1) (strict rule)."""
    x = jnp.asarray(_rand(shape, seed))
    round_trip = ops.ideal_downsample(_upsample(x, f), f)
    assert rel_err(round_trip, band_limit(x)) <= TOL
    xb = band_limit(x)
    assert rel_err(ops.ideal_downsample(_upsample(xb, f), f), xb) <= TOL
    if shape[-3] % 2 and shape[-2] % 2:  # odd sizes have no Nyquist bin: any x round-trips
        assert rel_err(round_trip, x) <= TOL


@SETTINGS
@given(st.sampled_from(UP_SHAPES), st.floats(-2, 2), st.floats(-2, 2), seeds)
def test_upsample_is_linear(shape, a, b, seed):
    x, y = _rand(shape, seed), _rand(shape, seed + 1)
    lhs = np.asarray(_upsample(jnp.asarray(a * x + b * y), 2))
    rhs = a * np.asarray(_upsample(jnp.asarray(x), 2)) + b * np.asarray(
        _upsample(jnp.asarray(y), 2)
    )
    assert np.max(np.abs(lhs - rhs)) <= TOL * max(1.0, np.max(np.abs(rhs)))


def test_upsample_factor_one_and_errors():
    x = jnp.asarray(_rand((3, 4, 2)))
    assert ops.ideal_upsample(x, 1) is x
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError):
            ops.ideal_upsample(x, bad)


@SETTINGS
@given(shapes, st.sampled_from([2, 3, 4]), st.sampled_from(RULES), st.data())
def test_downsample_is_lowpass_then_subsample(shape, f, rule, data):
    py = data.draw(st.integers(0, f - 1))
    px = data.draw(st.integers(0, f - 1))
    x = _rand(shape, data.draw(seeds))
    got = ops.ideal_downsample(jnp.asarray(x), f, phase=(py, px), rule=rule)
    want = ref_lowpass(x, Fraction(1, f), rule)[..., py::f, px::f, :]
    assert rel_err(got, want) <= TOL


def test_downsample_errors():
    x = jnp.zeros((4, 4, 1))
    with pytest.raises(ValueError):
        ops.ideal_downsample(x, 2, phase=(2, 0))
    with pytest.raises(ValueError):
        ops.ideal_downsample(x, 0)
    assert ops.ideal_downsample(x, 1) is x


# ----------------------------------------------------------------------------- fractional_shift


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(SHIFT_SHAPES), st.integers(-9, 9), st.integers(-9, 9), st.booleans())
def test_static_integer_shift_is_roll(shape, dy, dx, as_float):
    x = _rand(shape, 12)
    amount = (float(dy), float(dx)) if as_float else (dy, dx)
    got = ops.fractional_shift(jnp.asarray(x), amount)
    np.testing.assert_array_equal(np.asarray(got), _roll(x, dy, dx))


@SETTINGS
@given(st.sampled_from(SHIFT_SHAPES), st.integers(-40, 40), st.integers(-40, 40), seeds)
def test_traced_integer_shift_is_roll(shape, dy, dx, seed):
    x = _rand(shape, seed)
    assert rel_err(shift(x, dy, dx), _roll(x, dy, dx)) <= TOL
    as_int = _traced_shift(jnp.asarray(x), jnp.int32(dy), jnp.int32(dx))
    assert rel_err(as_int, _roll(x, dy, dx)) <= TOL


@SETTINGS
@given(st.sampled_from(SHIFT_SHAPES), st.floats(-20, 20), st.floats(-20, 20), seeds)
def test_shift_matches_phase_ramp_reference(shape, dy, dx, seed):
    x = _rand(shape, seed)
    got = shift(x, dy, dx)
    chex.assert_shape(got, shape)
    # float32 shift amounts: compare with the reference at the rounded amounts.
    dy32, dx32 = float(np.float32(dy)), float(np.float32(dx))
    assert rel_err(got, ref_shift(x, dy32, dx32)) <= TOL


def test_static_fractional_shift_matches_reference():
    x = _rand((2, 5, 8, 1), 13)
    for amount in [(0.5, 0.0), (-1.5, 2.25), (0.0, -0.5), (10.3, -7.9)]:
        assert rel_err(ops.fractional_shift(jnp.asarray(x), amount), ref_shift(x, *amount)) <= TOL


@SETTINGS
@given(st.sampled_from(SHIFT_SHAPES), st.floats(-4, 4), st.floats(-4, 4), st.floats(-4, 4),
       st.floats(-4, 4), seeds)
def test_shifts_compose_on_band_limited_input(shape, ay, ax, by, bx, seed):
    # The Nyquist bin of an even axis is multiplied by cos(pi d), and
    # cos(pi a) cos(pi b) != cos(pi (a + b)): shifts only compose once that bin is removed.
    x = band_limit(_rand(shape, seed))
    ay, ax, by, bx = (float(np.float32(v)) for v in (ay, ax, by, bx))
    twice = shift(shift(x, ay, ax), by, bx)
    once = shift(x, ay + by, ax + bx)
    assert rel_err(twice, once) <= TOL


def test_shifts_do_not_compose_on_the_nyquist_bin():
    """The documented exception: a pure Nyquist pattern vanishes after a half-pixel shift."""
    rows = np.tile(np.array([1.0, -1.0], np.float32), 3)
    x = np.broadcast_to(rows[:, None, None], (6, 6, 3)).copy()
    half_twice = shift(shift(x, 0.5, 0.0), 0.5, 0.0)
    assert np.max(np.abs(np.asarray(half_twice))) < 1e-5
    np.testing.assert_allclose(np.asarray(shift(x, 1.0, 0.0)), -x, atol=1e-5)


@pytest.mark.parametrize("shape", [(12, 7, 2), (2, 5, 8, 1)])
def test_shift_by_the_period_is_identity(shape):
    x = _rand(shape, 16)
    h, w = shape[-3], shape[-2]
    np.testing.assert_array_equal(np.asarray(ops.fractional_shift(jnp.asarray(x), (h, w))), x)
    assert rel_err(shift(x, h, -w), x) <= TOL
    assert rel_err(shift(x, 3 * h, 2 * w), x) <= TOL
    assert rel_err(shift(x, h + 0.25, 0.5 - 2 * w), shift(x, 0.25, 0.5)) <= TOL


def test_shift_vmaps_over_a_batch_of_shifts():
    x = jnp.asarray(_rand((6, 5, 2), 17))
    amounts = np.array([[0.0, 0.0], [0.5, -0.25], [1.0, 2.0], [-3.5, 0.75]], np.float32)
    batched = jax.vmap(lambda dy, dx: ops.fractional_shift(x, (dy, dx)))(
        jnp.asarray(amounts[:, 0]), jnp.asarray(amounts[:, 1])
    )
    chex.assert_shape(batched, (4, 6, 5, 2))
    for i, (dy, dx) in enumerate(amounts):
        assert rel_err(batched[i], ref_shift(np.asarray(x), float(dy), float(dx))) <= TOL


@SETTINGS
@given(st.sampled_from(SHIFT_SHAPES), st.floats(-5, 5), st.floats(-5, 5), seeds)
def test_shift_preserves_the_mean(shape, dy, dx, seed):
    x = _rand(shape, seed)
    x = x - x.mean(axis=(-3, -2), keepdims=True)  # zero mean per channel ...
    x = x + np.arange(shape[-1], dtype=np.float32)  # ... plus a known DC per channel
    got = np.asarray(shift(x, dy, dx))
    np.testing.assert_allclose(got.mean(axis=(-3, -2)), x.mean(axis=(-3, -2)), atol=1e-5)


@SETTINGS
@given(st.sampled_from(UP_SHAPES), st.sampled_from([2, 3]), st.integers(-6, 6),
       st.integers(-6, 6), seeds)
def test_shift_equals_upsample_roll_subsample(shape, up, a, b, seed):
    """Spec §4: the official evaluation shift (ideal upsample, roll the fine grid, subsample)
    is a shift by (a/up, b/up), Nyquist included, for any x."""
    x = _rand(shape, seed)
    want = _roll(_upsample(jnp.asarray(x), up), a, b)[..., ::up, ::up, :]
    assert rel_err(shift(x, a / up, b / up), want) <= TOL


def test_shift_keeps_bfloat16():
    x = jnp.asarray(_rand((6, 6, 3), 20), jnp.bfloat16)
    got = ops.fractional_shift(x, (0.5, -0.5))
    chex.assert_type(got, jnp.bfloat16)
    ref = ops.fractional_shift(x.astype(jnp.float32), (0.5, -0.5))
    assert rel_err(got.astype(jnp.float32), ref) <= 2.0**-7


def test_large_shift_keeps_float32_accuracy():
    # Regression: k*d used to be rounded in float32 before the reduction modulo N, giving
    # ~2e-4 relative error at d = 10000.3 on N = 12.
    x = _rand((12, 5, 1), 21)
    d = float(np.float32(10000.3))  # the reference uses the same float32 amount
    assert rel_err(shift(x, d, 0.0), ref_shift(x, d, 0.0)) <= TOL


# ----------------------------------------------------------------------------- implementations

IMPLS = ("fft", "matrix")


def _nchw(fn):
    """fn written for NCHW, applied to an NHWC array and returned as NHWC."""
    return lambda x: jnp.transpose(fn(jnp.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))


RESIZE_SHAPES = [(2, 8, 8, 3), (1, 7, 6, 2), (1, 12, 20, 2), (1, 28, 28, 2)]


@pytest.mark.parametrize("shape", RESIZE_SHAPES, ids=lambda s: f"{s[1]}x{s[2]}")
def test_resize_and_upsample_by_every_impl_and_layout(shape):
    """ideal_resize up and down, ideal_upsample: fft / matrix, NHWC / NCHW agree with the
    interpolation matrices applied separably."""
    _, h, w, c = shape
    mh, mw = filters.fine_grid_size(h), filters.fine_grid_size(w)
    up_hw = (2 * h, 2 * w)
    fm = filter_matrices

    @jax.jit
    def run(x, y):
        out = {
            "up_ref": fm.apply_separable(x, fm.upsample_matrix(h, 2), fm.upsample_matrix(w, 2)),
            "fine_ref": fm.apply_separable(x, fm.resample_matrix(h, mh), fm.resample_matrix(w, mw)),
            "band_ref": fm.apply_separable(
                y, fm.band_resample_matrix(mh, h), fm.band_resample_matrix(mw, w)
            ),
        }
        for impl in IMPLS:
            for layout in ("nhwc", "nchw"):
                wrap = _nchw if layout == "nchw" else (lambda f: f)
                kw = dict(impl=impl, layout=layout)
                cases = {
                    "up": (x, lambda v, kw=kw: filters.ideal_upsample(v, 2, **kw)),
                    "up_resize": (x, lambda v, kw=kw: filters.ideal_resize(v, up_hw, **kw)),
                    "fine": (x, lambda v, kw=kw: filters.ideal_resize(v, (mh, mw), **kw)),
                    "band": (y, lambda v, kw=kw: filters.ideal_resize(v, (h, w), **kw)),
                }
                for name, (arg, fn) in cases.items():
                    out[f"{name}_{impl}{layout}"] = wrap(fn)(arg)
        return out

    out = run(jnp.asarray(_rand(shape, 1), jnp.float32),
              jnp.asarray(_rand((shape[0], mh, mw, c), 2), jnp.float32))
    for key, value in out.items():
        ref = out[key.split("_")[0] + "_ref"]
        assert rel_err(value, ref) <= TOL, key


@pytest.mark.parametrize("shape", [(1, 7, 6, 2), (1, 12, 20, 2), (1, 56, 56, 1)],
                         ids=lambda s: f"{s[1]}x{s[2]}")
def test_downsample_and_lowpass_by_every_impl_and_layout(shape):
    @jax.jit
    def run(x):
        out = {}
        for factor in (2, 4):
            for rule in RULES:
                key = f"down{factor}{rule}"
                out[key + "_ref"] = filters.ideal_downsample(x, factor, rule=rule)
                for impl in IMPLS:
                    kw = dict(rule=rule, impl=impl, crop_spectrum=True)
                    out[f"{key}_{impl}"] = filters.ideal_downsample(x, factor, **kw)
                    out[f"{key}_{impl}nchw"] = _nchw(
                        lambda v, f=factor, kw=kw: filters.ideal_downsample(
                            v, f, layout="nchw", **kw))(x)
        out["lp_ref"] = filters.ideal_lowpass(x, 0.75)
        out["custom_ref"] = filters.ideal_lowpass(x, 0.75)[:, ::2, ::2]
        for impl in IMPLS:
            out[f"lp_{impl}"] = filters.ideal_lowpass(x, 0.75, impl=impl)
            out[f"lp_{impl}nchw"] = _nchw(
                lambda v, i=impl: filters.ideal_lowpass(v, 0.75, impl=i, layout="nchw"))(x)
            out[f"custom_{impl}"] = filters.ideal_downsample(x, 2, cutoff=0.75, impl=impl)
        return out

    out = run(jnp.asarray(_rand(shape, 3), jnp.float32))
    for key, value in out.items():
        assert rel_err(value, out[key.split("_")[0] + "_ref"]) <= TOL, key


def test_fine_grid_map_equals_the_official_2x_grid():
    def poly(p):
        return 0.1 + p * (0.5 + 0.3 * p)

    @jax.jit
    def run(x):
        ref = filters.ideal_downsample(poly(filters.ideal_upsample(x, 2)), 2)
        out = {"ref": ref}
        for impl in IMPLS:
            out[impl] = filters.fine_grid_map(x, poly, impl=impl)
            out[impl + "nchw"] = _nchw(
                lambda v, i=impl: filters.fine_grid_map(v, poly, impl=i, layout="nchw"))(x)
        # the official 2x grid is one of the allowed grids
        out["grid2x"] = filters.fine_grid_map(x, poly, impl="matrix", grid=(14, 24))
        return out

    out = run(jnp.asarray(_rand((2, 7, 12, 3), 5), jnp.float32))
    for key, value in out.items():
        assert rel_err(value, out["ref"]) <= TOL, key
    with pytest.raises(ValueError, match="aliases"):
        filters.fine_grid_map(jnp.zeros((1, 7, 12, 1)), poly, grid=(9, 17))


def test_shift_in_nchw_equals_nhwc():
    x = jnp.asarray(_rand((2, 6, 7, 3), 18))
    want = filters.fractional_shift(x, (0.3, -1.7))
    got = _nchw(lambda v: filters.fractional_shift(v, (0.3, -1.7), layout="nchw"))(x)
    assert rel_err(got, want) <= TOL
    rolled = _nchw(lambda v: filters.fractional_shift(v, (2, -1), layout="nchw"))(x)
    np.testing.assert_array_equal(np.asarray(rolled), np.roll(np.asarray(x), (2, -1), (1, 2)))


def test_bfloat16_in_bfloat16_out_for_every_impl():
    x = jnp.asarray(_rand((1, 8, 8, 8), 6), jnp.bfloat16)  # 8x8 in either layout
    for impl in ("auto",) + IMPLS:
        for layout in ("nhwc", "nchw"):
            kw = dict(impl=impl, layout=layout)
            outs = [
                filters.ideal_lowpass(x, 0.5, **kw),
                filters.ideal_downsample(x, 2, crop_spectrum=True, **kw),
                filters.ideal_downsample(x, 2, **kw),
                filters.ideal_upsample(x, 2, **kw),
                filters.ideal_resize(x, (12, 12), **kw),
                filters.ideal_resize(x, (4, 4), **kw),
                filters.fine_grid_map(x, lambda p: p * p, **kw),
            ]
            assert [o.dtype for o in outs] == [jnp.bfloat16] * len(outs), (impl, layout)
    assert filters.fractional_shift(x, (0.5, 0.25)).dtype == jnp.bfloat16


def test_float64_stays_float64_and_is_computed_in_float64():
    """Under x64, float64 in -> float64 out, and every impl agrees with the float64 NumPy
    reference to 1e-12, which float32 arithmetic (round-off ~1e-7) could not reach."""
    x = _rand((1, 12, 10, 2), 7).astype(np.float64)
    want_lp = ref_lowpass(x[0], Fraction(1, 2))[None]
    want_up = ref_upsample(x[0], 2)[None]
    with jax.enable_x64(True):
        xd = jnp.asarray(x, jnp.float64)
        for impl in IMPLS:
            lp = filters.ideal_lowpass(xd, 0.5, impl=impl)
            down = filters.ideal_downsample(xd, 2, impl=impl, crop_spectrum=True)
            up = filters.ideal_upsample(xd, 2, impl=impl)
            sq = filters.fine_grid_map(xd, lambda p: p * p, impl=impl)
            for y in (lp, down, up, sq):
                assert y.dtype == jnp.float64, impl
            assert rel_err(lp, want_lp) <= 1e-12, impl
            assert rel_err(down, want_lp[:, ::2, ::2]) <= 1e-12, impl
            assert rel_err(up, want_up) <= 1e-12, impl
            want_sq = ref_lowpass((want_up**2)[0], Fraction(1, 2))[None, ::2, ::2]
            assert rel_err(sq, want_sq) <= 1e-12, impl


def test_rejects_bad_arguments():
    x = jnp.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="filter implementation"):
        filters.ideal_downsample(x, 2, impl="dct")
    with pytest.raises(ValueError, match="filter implementation"):
        filters.ideal_lowpass(x, 0.5, impl="matrices")
    with pytest.raises(ValueError, match="layout"):
        filter_matrices.apply_separable(x, None, None, layout="hwcn")
    with pytest.raises(ValueError, match="layout"):
        filters.ideal_lowpass(x, 0.5, layout="hwcn")
    with pytest.raises(ValueError, match="one side"):
        filters.ideal_resize(x, (9, 4))
    # the identity on the fine grid: interpolation there and the band back is the identity on
    # a band-limited input (no Nyquist bin), to float32 round-off
    v = ops.ideal_lowpass(jnp.asarray(_rand((2, 8, 9, 3), 8)), 1.0)
    for impl in IMPLS:
        got = filters.fine_grid_map(v, lambda p: p, impl=impl)
        assert got.shape == v.shape and got.dtype == v.dtype
        assert rel_err(got, v) <= TOL, impl


def test_downsample_by_matrices_for_a_tpu_goes_channels_first_with_the_same_result():
    from afc_jax.ops.platform import targeting

    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 32, 24, 5)), jnp.float32)
    ref = filters.ideal_downsample(x, 4, impl="fft")
    with targeting("tpu"):
        jaxpr = str(jax.make_jaxpr(lambda v: filters.ideal_downsample(v, 4, impl="matrix"))(x))
        got = filters.ideal_downsample(x, 4, impl="matrix")
    channels_first = "transpose[permutation=(0, 3, 1, 2)]"
    assert channels_first in jaxpr
    assert got.shape == (2, 8, 6, 5)
    assert rel_err(got, ref) < 1e-5
    cpu = str(jax.make_jaxpr(lambda v: filters.ideal_downsample(v, 4, impl="matrix"))(x))
    assert channels_first not in cpu
