"""The matrix implementation (`afc_jax.ops.filter_matrices`) against the FFT definitions.

Matrices are checked in float64 numpy against float64 FFT references (agreement ~1e-14); the
filters they implement, by every implementation, in `tests/ops/test_filters.py`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax.ops import filter_matrices as fm
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
    got = x @ fm.lowpass_matrix(n, cutoff, rule).T
    assert rel_err(got, np_lowpass_1d(x, cutoff, rule)) <= TOL64


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsample_matrix_is_ideal_upsampling_and_keeps_samples(n, factor):
    u = fm.upsample_matrix(n, factor)
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
        d = fm.downsample_matrix(n, factor, rule, phase)
        want = np_lowpass_1d(x, 1 / factor, rule)[:, phase::factor]
        assert rel_err(x @ d.T, want) <= TOL64


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 14, 28, 56])
def test_resample_pairs_equal_the_official_2x_forms(n):
    np.testing.assert_allclose(fm.resample_matrix(n, 2 * n), fm.upsample_matrix(n, 2),
                               atol=1e-13)
    for rule in ("strict", "official"):
        np.testing.assert_allclose(fm.band_resample_matrix(2 * n, n),
                                   fm.downsample_matrix(2 * n, 2, rule), atol=1e-13)


def test_fine_grid_sizes():
    assert [fm.fine_grid_size(n) for n in (56, 28, 14, 7, 8, 4, 2, 1)] == [84, 42, 21, 10, 12,
                                                                              6, 3, 1]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 14, 28])
def test_square_on_the_fine_grid_equals_the_2x_grid_and_one_less_aliases(n):
    """band(interp_m(v)^2) equals down(lowpass(up(v)^2)) for m = fine_grid_size(n), not m - 1."""
    v = _rand((4, n), n)
    want = (np_upsample_1d(v, 2) ** 2) @ fm.downsample_matrix(2 * n, 2).T

    def on_grid(m):
        p = v @ fm.resample_matrix(n, m).T
        return (p**2) @ fm.band_resample_matrix(m, n).T

    m = fm.fine_grid_size(n)
    assert rel_err(on_grid(m), want) <= TOL64
    if m - 1 > n:
        assert rel_err(on_grid(m - 1), want) > 1e-6


def test_matrices_are_cached_and_read_only():
    a = fm.downsample_matrix(56, 2)
    assert a is fm.downsample_matrix(56, 2)
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_apply_separable_layouts_and_identity():
    x = jnp.asarray(_rand((2, 6, 7, 3), 9), jnp.float32)
    u, d = fm.upsample_matrix(6, 2), fm.downsample_matrix(7, 2)
    nhwc = fm.apply_separable(x, u, d)
    nchw = fm.apply_separable(jnp.transpose(x, (0, 3, 1, 2)), u, d, layout="nchw")
    assert nhwc.shape == (2, 12, 4, 3)
    assert rel_err(jnp.transpose(nchw, (0, 2, 3, 1)), nhwc) <= TOL32
    assert fm.apply_separable(x, None, None) is not None
    np.testing.assert_array_equal(np.asarray(fm.apply_separable(x, None, None)), np.asarray(x))
    with pytest.raises(ValueError, match="layout"):
        fm.apply_separable(x, None, None, layout="hwcn")


def test_filter_precision_is_highest_except_16_bit_on_a_tpu():
    from afc_jax.ops.platform import targeting

    for platform in ("cpu", "gpu", "tpu"):
        with targeting(platform):
            assert fm.filter_precision(jnp.float32) == jax.lax.Precision.HIGHEST
            assert fm.filter_precision(jnp.float64) == jax.lax.Precision.HIGHEST
            want = jax.lax.Precision.DEFAULT if platform == "tpu" else jax.lax.Precision.HIGHEST
            assert fm.filter_precision(jnp.bfloat16) == want, platform


@pytest.mark.parametrize("platform, dtype, fine", [
    ("tpu", jnp.bfloat16, jnp.bfloat16),  # one-pass products: the fine map stays bfloat16
    ("tpu", jnp.float32, jnp.float32),
    ("cpu", jnp.bfloat16, jnp.float32),
])  # fmt: skip
def test_fine_map_dtype_follows_the_products(platform, dtype, fine):
    from afc_jax.ops.platform import targeting

    seen = []

    def fn(p):
        seen.append(p.dtype)
        return p * p

    v = jnp.asarray(np.random.default_rng(0).standard_normal((1, 3, 8, 8)), dtype)
    with targeting(platform):
        out = fm.fine_grid_map(v, fn, (12, 12), layout="nchw")
    assert seen == [jnp.dtype(fine)]
    assert out.dtype == jnp.float32  # the compute dtype; callers cast back
