"""Ideal (Fourier-domain) filters, resampling and fractional shifts on NHWC arrays.

All functions act on the two spatial axes of an array of shape (..., H, W, C) and accept any
leading batch dims and any H, W (odd, even, non-square). They compute in float32 (float64 when
given float64) whatever the input dtype, and return the input dtype: bfloat16 models still get
exact filters.

Conventions (numerical contract, spec §2-§4):
- A length-N axis has integer frequencies k = -N/2..N/2 (the DFT bin k mod N).
- `ideal_lowpass(x, cutoff)` keeps |k| < cutoff * N / 2 on each axis ("strict" rule). The
  official PyTorch code uses a floor-based rule (`rule="official"`): keep |k| <= floor(N c / 2)
  and, when N % 4 == 0, also drop +-floor(N c / 2). The two agree whenever N c / 2 is an integer
  (every size a model sees when the input is a multiple of 32) and differ otherwise, e.g.
  N=100 with cutoff 1/4 (strict keeps |k| <= 12, official <= 11) or N=28 with cutoff 3/4
  (strict keeps |k| <= 10, official <= 9).
- The Nyquist bin of an even axis is real-valued for real signals; resampling splits it evenly
  between +-N/2 and shifting scales it by cos(pi d). This is the interpretation in which the
  discrete signal is a symmetric trigonometric polynomial, and it makes integer shifts equal to
  `jnp.roll` and fractional shifts compose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_SPATIAL_AXES = (-3, -2)
FILTER_RULES = ("strict", "official")


# ----------------------------------------------------------------------------- helpers


def _compute_dtype(dtype) -> jnp.dtype:
    """float32 for every floating input except float64 (kept for high-precision tests)."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _check_spatial(x, fn: str) -> tuple[int, int]:
    if x.ndim < 3:
        raise ValueError(f"{fn} expects an array of shape (..., H, W, C); got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    if h < 1 or w < 1:
        raise ValueError(f"{fn} got an empty spatial size {(h, w)}")
    return h, w


def _pair(value, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (y, x) pair, got {value!r}")
        return tuple(value)
    return (value, value)


def integer_frequencies(n: int, *, half: bool = False) -> np.ndarray:
    """Signed integer frequency of each DFT bin of a length-n axis (rfft bins when `half`)."""
    if half:
        return np.arange(n // 2 + 1)
    k = np.arange(n)
    return np.where(k <= n // 2, k, k - n)


def lowpass_mask_1d(
    n: int, cutoff: float, *, half: bool = False, rule: str = "strict"
) -> np.ndarray:
    """0/1 mask over the DFT bins of a length-n axis for an ideal low-pass at `cutoff`.

    `cutoff` is a fraction of the Nyquist frequency (1.0 keeps everything below Nyquist).
    """
    if rule not in FILTER_RULES:
        raise ValueError(f"unknown filter rule {rule!r}; choose one of {FILTER_RULES}")
    if not cutoff > 0:
        raise ValueError(f"cutoff must be > 0, got {cutoff}")
    k = np.abs(integer_frequencies(n, half=half))
    if rule == "strict":
        # |k| < cutoff * n / 2, written as 2|k| < cutoff * n; the epsilon keeps exact
        # rational boundaries (cutoff = 1/3, n = 6 -> 2.0000000000000004) on the right side.
        keep = 2 * k < cutoff * n - 1e-9
    else:
        lo = math.floor(n * cutoff / 2 + 1e-9)
        keep = k <= lo
        if n % 4 == 0:
            keep &= k != lo
    return keep.astype(np.float64)


def lowpass_mask_2d(h: int, w: int, cutoff, *, rule: str = "strict") -> np.ndarray:
    """Separable (H, W//2 + 1) mask for `jnp.fft.rfft2` spectra of an H x W map."""
    cy, cx = _pair(cutoff, "cutoff")
    return np.outer(lowpass_mask_1d(h, cy, rule=rule), lowpass_mask_1d(w, cx, half=True, rule=rule))


def _rfft2(x):
    return jnp.fft.rfft2(x, axes=_SPATIAL_AXES)


def _irfft2(spec, h: int, w: int):
    return jnp.fft.irfft2(spec, s=(h, w), axes=_SPATIAL_AXES)


# ----------------------------------------------------------------------------- filters


def ideal_lowpass(x: jnp.ndarray, cutoff, *, rule: str = "strict") -> jnp.ndarray:
    """Ideal low-pass filter over (H, W): zero every DFT bin at or above the cutoff.

    Args:
      x: (..., H, W, C) array.
      cutoff: fraction of Nyquist kept, a number or a (cutoff_h, cutoff_w) pair.
      rule: "strict" (|k| < cutoff N / 2, the default) or "official" (the PyTorch rule).

    Returns:
      Array of the same shape and dtype.
    """
    h, w = _check_spatial(x, "ideal_lowpass")
    ct = _compute_dtype(x.dtype)
    mask = jnp.asarray(lowpass_mask_2d(h, w, cutoff, rule=rule)[:, :, None], dtype=ct)
    y = _irfft2(_rfft2(x.astype(ct)) * mask, h, w)
    return y.astype(x.dtype)


def _spectral_pad_full(spec, axis: int, n: int, m: int):
    """Zero-pads a full (fft) spectrum axis from n to m >= n bins, splitting Nyquist."""
    spec = jnp.moveaxis(spec, axis, 0)
    n_pos = (n + 1) // 2  # bins 0 .. ceil(n/2)-1
    pos = spec[:n_pos]
    if n % 2 == 0:
        nyq = spec[n // 2 : n // 2 + 1] * 0.5
        neg = spec[n // 2 + 1 :]
        zeros = jnp.zeros((m - n - 1,) + spec.shape[1:], spec.dtype)
        out = jnp.concatenate([pos, nyq, zeros, nyq, neg], axis=0)
    else:
        neg = spec[n_pos:]
        zeros = jnp.zeros((m - n,) + spec.shape[1:], spec.dtype)
        out = jnp.concatenate([pos, zeros, neg], axis=0)
    return jnp.moveaxis(out, 0, axis)


def _spectral_pad_half(spec, axis: int, n: int, m: int):
    """Zero-pads an rfft spectrum axis (n//2+1 bins) to m//2+1 bins, halving Nyquist."""
    spec = jnp.moveaxis(spec, axis, 0)
    n_pos = (n + 1) // 2
    parts = [spec[:n_pos]]
    if n % 2 == 0:
        parts.append(spec[n // 2 : n // 2 + 1] * 0.5)
    used = n_pos + (n % 2 == 0)
    parts.append(jnp.zeros((m // 2 + 1 - used,) + spec.shape[1:], spec.dtype))
    out = jnp.concatenate(parts, axis=0)
    return jnp.moveaxis(out, 0, axis)


def ideal_upsample(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
    """Ideal (band-limited) upsampling by an integer factor on both spatial axes.

    Equivalent to inserting factor-1 zeros after every sample and low-passing the fine grid
    (with the Nyquist bin of an even axis split between its two images), times factor per axis.
    The input samples are kept exactly: `ideal_upsample(x, f)[..., ::f, ::f, :] == x`.

    Args:
      x: (..., H, W, C) array.
      factor: integer >= 1.

    Returns:
      (..., factor*H, factor*W, C) array of the input dtype.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"upsampling factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    h, w = _check_spatial(x, "ideal_upsample")
    if factor == 1:
        return x
    ct = _compute_dtype(x.dtype)
    spec = _rfft2(x.astype(ct)) * (factor * factor)
    spec = _spectral_pad_full(spec, -3, h, factor * h)
    spec = _spectral_pad_half(spec, -2, w, factor * w)
    return _irfft2(spec, factor * h, factor * w).astype(x.dtype)


def ideal_downsample(
    x: jnp.ndarray, factor: int = 2, *, phase: Sequence[int] = (0, 0), rule: str = "strict"
) -> jnp.ndarray:
    """Ideal low-pass at 1/factor of Nyquist, then keep every factor-th sample.

    Args:
      x: (..., H, W, C) array.
      factor: integer stride >= 1.
      phase: (row, column) offset of the kept sample grid, each in [0, factor).
      rule: low-pass rule, see `ideal_lowpass`.

    Returns:
      (..., ceil((H - py) / factor), ceil((W - px) / factor), C) array.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"downsampling factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    py, px = (int(p) for p in _pair(phase, "phase"))
    if not (0 <= py < factor and 0 <= px < factor):
        raise ValueError(f"phase must lie in [0, {factor}), got {phase!r}")
    _check_spatial(x, "ideal_downsample")
    if factor == 1:
        return x
    y = ideal_lowpass(x, 1.0 / factor, rule=rule)
    return y[..., py::factor, px::factor, :]


# ----------------------------------------------------------------------------- shifts


def _is_static_integer(v) -> bool:
    if isinstance(v, jax.core.Tracer):
        return False
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == round(f)


def _shift_factors(n: int, d, *, half: bool, ct):
    """Per-bin multipliers exp(-2 pi i k d / n), with cos(pi d) on an even axis' Nyquist bin."""
    k = integer_frequencies(n, half=half)
    d = jnp.asarray(d, ct)
    # k*d is only needed modulo n. Split d = m + f (m integer, 0 <= f < 1): k*m mod n is exact
    # in integers and k*f < n/2 keeps its float32 rounding small, so large shifts stay accurate.
    m = jnp.floor(d)
    f = d - m
    km = jnp.mod(jnp.asarray(k, jnp.int32) * jnp.mod(m, n).astype(jnp.int32), n)
    kd = jnp.mod(km.astype(ct) + jnp.asarray(k, ct) * f, n)
    angle = (-2.0 * math.pi / n) * kd
    ramp = jax.lax.complex(jnp.cos(angle), jnp.sin(angle))
    if n % 2 == 0:
        nyq = n // 2
        nyq_factor = jnp.cos(math.pi * jnp.mod(d, 2.0)).astype(ramp.dtype)
        ramp = ramp.at[nyq].set(nyq_factor)
    return ramp


def fractional_shift(x: jnp.ndarray, shift) -> jnp.ndarray:
    """Circularly shifts the spatial axes by real amounts (dy, dx) with a Fourier phase ramp.

    `y[i, j] = x(i - dy, j - dx)` for the band-limited interpolant of x: content moves towards
    higher indices, like `jnp.roll(x, (dy, dx), axis=(-3, -2))`, which it equals for integer
    shifts (exactly when the shifts are static Python integers, to rounding when traced).

    Args:
      x: (..., H, W, C) array.
      shift: (dy, dx); each a Python number or a scalar (possibly traced) array.

    Returns:
      Array of the same shape and dtype.
    """
    h, w = _check_spatial(x, "fractional_shift")
    dy, dx = _pair(shift, "shift")
    if _is_static_integer(dy) and _is_static_integer(dx):
        return jnp.roll(x, (int(round(float(dy))), int(round(float(dx)))), axis=_SPATIAL_AXES)
    ct = _compute_dtype(x.dtype)
    ry = _shift_factors(h, dy, half=False, ct=ct)
    rx = _shift_factors(w, dx, half=True, ct=ct)
    spec = _rfft2(x.astype(ct)) * (ry[:, None, None] * rx[None, :, None])
    return _irfft2(spec, h, w).astype(x.dtype)
