"""Matrix forms of the ideal filters (`afc_jax.ops.dft`) against their FFT definitions.

Matrices are checked in float64 numpy against float64 FFT references (agreement ~1e-14); the
jitted apply functions in float32 against `afc_jax.ops.fourier` (tolerance 1e-5 relative,
float32 round-off is ~1e-6).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax.ops import dft, fourier
from tests.helpers import rel_err

TOL32 = 1e-5
TOL64 = 1e-12


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _signed(n):
    k = np.arange(n)
    return np.where(k <= n // 2, k, k - n)


def np_lowpass_1d(x, cutoff, rule="strict"):
    """float64 reference of the 1D ideal low-pass (spec §2) on the last axis."""
    n = x.shape[-1]
    k = np.abs(_signed(n))
    if rule == "strict":
        keep = 2 * k < cutoff * n - 1e-9
    else:
        lo = math.floor(n * cutoff / 2 + 1e-9)
        keep = (k <= lo) & ((n % 4 != 0) | (k != lo))
    return np.fft.ifft(np.fft.fft(x) * keep).real


def np_upsample_1d(x, f):
    """float64 reference of ideal upsampling (spec §3): zero stuffing, split Nyquist, times f."""
    n = x.shape[-1]
    z = np.zeros(x.shape[:-1] + (f * n,))
    z[..., ::f] = x
    k = np.abs(_signed(f * n))
    w = np.where(2 * k < n, 1.0, np.where(2 * k == n, 0.5, 0.0))
    return f * np.fft.ifft(np.fft.fft(z) * w).real


SIZES = [1, 2, 3, 6, 7, 8, 12, 14, 20, 28, 56, 100]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cutoff, rule", [(0.5, "strict"), (0.75, "strict"), (0.25, "official"),
                                          (0.75, "official"), (1 / 3, "strict")])
def test_lowpass_matrix_is_the_ideal_lowpass(n, cutoff, rule):
    x = _rand((3, n), n)
    got = x @ dft.lowpass_matrix(n, cutoff, rule).T
    assert rel_err(got, np_lowpass_1d(x, cutoff, rule)) <= TOL64


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsample_matrix_is_ideal_upsampling_and_keeps_samples(n, factor):
    u = dft.upsample_matrix(n, factor)
    assert u.shape == (factor * n, n)
    np.testing.assert_allclose(u[::factor], np.eye(n), atol=1e-13)
    x = _rand((2, n), n + factor)
    assert rel_err(x @ u.T, np_upsample_1d(x, factor)) <= TOL64


@pytest.mark.parametrize("n", [4, 7, 12, 20, 28, 56, 100, 224])
@pytest.mark.parametrize("factor, rule", [(2, "strict"), (2, "official"), (4, "strict"),
                                          (4, "official")])
def test_downsample_matrix_is_lowpass_then_subsample(n, factor, rule):
    x = _rand((2, n), n)
    for phase in range(factor):
        d = dft.downsample_matrix(n, factor, rule, phase)
        want = np_lowpass_1d(x, 1 / factor, rule)[:, phase::factor]
        assert rel_err(x @ d.T, want) <= TOL64


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 14, 28, 56])
def test_resample_pairs_equal_the_official_2x_forms(n):
    np.testing.assert_allclose(dft.resample_matrix(n, 2 * n), dft.upsample_matrix(n, 2),
                               atol=1e-13)
    for rule in ("strict", "official"):
        np.testing.assert_allclose(dft.band_resample_matrix(2 * n, n),
                                   dft.downsample_matrix(2 * n, 2, rule), atol=1e-13)


def test_fine_grid_sizes():
    assert [dft.fine_grid_size(n) for n in (56, 28, 14, 7, 8, 4, 2, 1)] == [84, 42, 21, 10, 12,
                                                                              6, 3, 1]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 14, 28])
def test_square_on_the_fine_grid_equals_the_2x_grid_and_one_less_aliases(n):
    """band(interp_m(v)^2) equals down(lowpass(up(v)^2)) for m = fine_grid_size(n), not m - 1."""
    v = _rand((4, n), n)
    want = (np_upsample_1d(v, 2) ** 2) @ dft.downsample_matrix(2 * n, 2).T

    def on_grid(m):
        p = v @ dft.resample_matrix(n, m).T
        return (p**2) @ dft.band_resample_matrix(m, n).T

    m = dft.fine_grid_size(n)
    assert rel_err(on_grid(m), want) <= TOL64
    if m - 1 > n:
        assert rel_err(on_grid(m - 1), want) > 1e-6


@pytest.mark.parametrize("cutoff", [0.25, 0.5, 0.75])
def test_band_basis_projects_on_the_band(cutoff):
    for n in (7, 56, 224):
        keep = dft.band_basis(n, cutoff)
        drop = dft.band_basis(n, cutoff, keep=False)
        np.testing.assert_allclose(keep.T @ keep, np.eye(keep.shape[1]), atol=1e-12)
        np.testing.assert_allclose(keep @ keep.T, dft.lowpass_matrix(n, cutoff), atol=1e-12)
        np.testing.assert_allclose(np.eye(n) - drop @ drop.T, dft.lowpass_matrix(n, cutoff),
                                   atol=1e-12)


def test_matrices_are_cached_and_read_only():
    a = dft.downsample_matrix(56, 2)
    assert a is dft.downsample_matrix(56, 2)
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


# ----------------------------------------------------------------------------- jitted ops


def _nchw(fn):
    """fn written for NCHW, applied to an NHWC array and returned as NHWC."""
    return lambda x: jnp.transpose(fn(jnp.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))


SHAPES = [(2, 8, 8, 3), (1, 7, 6, 2), (1, 12, 20, 2), (1, 28, 28, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[2]}")
def test_apply_separable_and_fft_helpers(shape):
    _, h, w, c = shape
    mh, mw = dft.fine_grid_size(h), dft.fine_grid_size(w)
    up_h, up_w = dft.upsample_matrix(h, 2), dft.upsample_matrix(w, 2)
    band_h, band_w = dft.band_resample_matrix(mh, h), dft.band_resample_matrix(mw, w)

    @jax.jit
    def run(x, y):
        return {
            "up_ref": fourier.ideal_upsample(x, 2),
            "up_nhwc": dft.apply_separable(x, up_h, up_w),
            "up_nchw": _nchw(lambda v: dft.apply_separable(v, up_h, up_w, layout="nchw"))(x),
            "up_fft_nhwc": dft.fourier_resize(x, (2 * h, 2 * w)),
            "up_fft_nchw": _nchw(lambda v: dft.fourier_resize(v, (2 * h, 2 * w),
                                                              layout="nchw"))(x),
            "fine_ref": dft.apply_separable(x, dft.resample_matrix(h, mh),
                                            dft.resample_matrix(w, mw)),
            "fine_fft": dft.fourier_resize(x, (mh, mw)),
            "band_ref": dft.apply_separable(y, band_h, band_w),
            "band_nhwc": dft.spectral_crop(y, (h, w)),
            "band_nchw": _nchw(lambda v: dft.spectral_crop(v, (h, w), layout="nchw"))(y),
        }

    out = run(jnp.asarray(_rand(shape, 1), jnp.float32),
              jnp.asarray(_rand((shape[0], mh, mw, c), 2), jnp.float32))
    for key, value in out.items():
        ref = out[key.split("_")[0] + "_ref"]
        assert rel_err(value, ref) <= TOL32, key


@pytest.mark.parametrize("shape", [(1, 7, 6, 2), (1, 12, 20, 2), (1, 56, 56, 1)],
                         ids=lambda s: f"{s[1]}x{s[2]}")
def test_downsample_and_lowpass_by_fft_and_matrix(shape):
    @jax.jit
    def run(x):
        out = {}
        for factor in (2, 4):
            for rule in ("strict", "official"):
                key = f"down{factor}{rule}"
                out[key + "_ref"] = fourier.ideal_downsample(x, factor, rule=rule)
                for impl in dft.FILTER_IMPLS:
                    out[f"{key}_{impl}"] = dft.downsample(x, factor, rule=rule, impl=impl)
                    out[f"{key}_{impl}nchw"] = _nchw(lambda v, f=factor, r=rule, i=impl:
                                                     dft.downsample(v, f, rule=r, impl=i,
                                                                    layout="nchw"))(x)
        out["lp_ref"] = fourier.ideal_lowpass(x, 0.75)
        out["custom_ref"] = fourier.ideal_lowpass(x, 0.75)[:, ::2, ::2]
        for impl in dft.FILTER_IMPLS:
            out[f"lp_{impl}"] = dft.lowpass(x, 0.75, impl=impl)
            out[f"lp_{impl}nchw"] = _nchw(lambda v, i=impl: dft.lowpass(v, 0.75, impl=i,
                                                                        layout="nchw"))(x)
            out[f"custom_{impl}"] = dft.downsample(x, 2, cutoff=0.75, impl=impl)
        return out

    out = run(jnp.asarray(_rand(shape, 3), jnp.float32))
    for key, value in out.items():
        assert rel_err(value, out[key.split("_")[0] + "_ref"]) <= TOL32, key


def test_downsample_fft_crop_falls_back_where_the_crop_differs():
    """N = 100, stride 4, official rule drops the legitimate bins +-12: not a plain crop."""
    x = jnp.asarray(_rand((1, 100, 20, 1), 4), jnp.float32)
    assert not dft._fft_crop_ok(100, 4, "official", 0.25)
    want = fourier.ideal_downsample(x, 4, rule="official")
    assert rel_err(dft.downsample(x, 4, rule="official", impl="fft"), want) <= TOL32
    assert rel_err(dft.downsample(x, 4, rule="official", impl="matrix"), want) <= TOL32


def test_fine_grid_map_equals_the_official_2x_grid():
    def poly(p):
        return 0.1 + p * (0.5 + 0.3 * p)

    @jax.jit
    def run(x):
        out = {"ref": fourier.ideal_downsample(poly(fourier.ideal_upsample(x, 2)), 2)}
        for impl in dft.FILTER_IMPLS:
            out[impl] = dft.fine_grid_map(x, poly, impl=impl)
            out[impl + "nchw"] = _nchw(lambda v, i=impl: dft.fine_grid_map(v, poly, impl=i,
                                                                            layout="nchw"))(x)
        # the official 2x grid is one of the allowed grids
        out["grid2x"] = dft.fine_grid_map(x, poly, impl="matrix", grid=(14, 24))
        return out

    out = run(jnp.asarray(_rand((2, 7, 12, 3), 5), jnp.float32))
    for key, value in out.items():
        assert rel_err(value, out["ref"]) <= TOL32, key
    with pytest.raises(ValueError, match="aliases"):
        dft.fine_grid_map(jnp.zeros((1, 7, 12, 1)), poly, grid=(9, 17))


def test_float64_and_bfloat16_dtypes():
    x = jnp.asarray(_rand((1, 8, 8, 2), 6), jnp.bfloat16)
    y = dft.downsample(x, 2, impl="matrix")
    assert y.dtype == jnp.bfloat16
    assert dft.lowpass(x, 0.5, impl="fft").dtype == jnp.bfloat16


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_choose_filter_impl_is_valid(backend):
    for op in ("mlp_fast", "mlp_reference", "lowpass", "downsample2", "downsample4"):
        for size in (1, 7, 14, 28, 56, 112, 224, 512):
            assert dft.choose_filter_impl(op, size, 96, backend) in dft.FILTER_IMPLS
    if backend == "tpu":
        assert dft.choose_filter_impl("lowpass", 224, 96, backend) == "matrix"
    assert dft.choose_filter_impl("mlp_fast", 7, 3072, backend) == "matrix"


def test_rejects_bad_arguments():
    x = jnp.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="filter implementation"):
        dft.downsample(x, 2, impl="dct")
    with pytest.raises(ValueError, match="layout"):
        dft.apply_separable(x, None, None, layout="hwcn")
    with pytest.raises(ValueError):
        dft.spectral_crop(x, (9, 8))
    with pytest.raises(ValueError):
        dft.fourier_resize(x, (4, 8))
    jax.block_until_ready(dft.fine_grid_map(x, lambda p: p))
