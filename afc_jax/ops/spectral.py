"""FFT implementation of the ideal filters: rfft2 spectra masked, cropped, padded or phase-shifted.

This module also holds the conventions every implementation shares (spec §2-§4): the band
rules, the compute dtype and the two layouts. Arrays are (..., H, W, C) ("nhwc") or
(..., C, H, W) ("nchw"), with any leading batch dims and any H, W (odd, even, non-square).
Everything computes in float32 (float64 when given float64) and returns the input dtype, so
bfloat16 models still get exact filters. Callers normally use `afc_jax.ops.filters`.

Conventions:
- A length-N axis has integer frequencies k = -N/2..N/2 (the DFT bin k mod N).
- The low-pass at `cutoff` keeps |k| < cutoff * N / 2 on each axis ("strict" rule). The
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

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FILTER_RULES",
    "LAYOUTS",
    "as_pair",
    "compute_dtype",
    "crop",
    "crop_is_downsample",
    "downsample",
    "fractional_shift",
    "integer_frequencies",
    "lowpass",
    "lowpass_mask_1d",
    "lowpass_mask_2d",
    "resize",
    "spatial_axes",
    "upsample",
]

FILTER_RULES = ("strict", "official")
LAYOUTS = ("nhwc", "nchw")


# ----------------------------------------------------------------------------- conventions


def compute_dtype(dtype) -> jnp.dtype:
    """float32 for every floating input except float64 (kept for high-precision tests)."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def spatial_axes(layout: str) -> tuple[int, int]:
    """(H axis, W axis) of an array in `layout`: (-3, -2) for "nhwc", (-2, -1) for "nchw"."""
    if layout == "nhwc":
        return (-3, -2)
    if layout == "nchw":
        return (-2, -1)
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def as_pair(value, name: str) -> tuple:
    """(y, x) from a number (used for both axes) or a 2-sequence."""
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
    cy, cx = as_pair(cutoff, "cutoff")
    return np.outer(lowpass_mask_1d(h, cy, rule=rule), lowpass_mask_1d(w, cx, half=True, rule=rule))


def _rfft2(x, layout: str):
    return jnp.fft.rfft2(x, axes=spatial_axes(layout))


def _irfft2(spec, hw, layout: str):
    return jnp.fft.irfft2(spec, s=tuple(hw), axes=spatial_axes(layout))


def _hw(x, layout: str) -> tuple[int, int]:
    ax_h, ax_w = spatial_axes(layout)
    return x.shape[ax_h], x.shape[ax_w]


def _per_bin(mask2d: np.ndarray, layout: str) -> np.ndarray:
    """An (H, W') array over the spectrum broadcast against the layout's channel axis."""
    return mask2d[:, :, None] if layout == "nhwc" else mask2d


# ----------------------------------------------------------------------------- low-pass


def lowpass(x, cutoff, *, rule: str = "strict", layout: str = "nhwc"):
    """Ideal low-pass: rfft2, zero the bins at or above the cutoff, irfft2 (any size)."""
    h, w = _hw(x, layout)
    ct = compute_dtype(x.dtype)
    mask = jnp.asarray(_per_bin(lowpass_mask_2d(h, w, cutoff, rule=rule), layout), dtype=ct)
    y = _irfft2(_rfft2(x.astype(ct), layout) * mask, (h, w), layout)
    return y.astype(x.dtype)


def downsample(
    x, factor: int, *, phase=(0, 0), rule: str = "strict", cutoff: float, layout: str = "nhwc",
    crop_spectrum: bool = False,
):
    """Ideal low-pass at `cutoff`, then keep every factor-th sample from `phase` (row, col).

    With `crop_spectrum`, where that is the same map (phase 0 and `crop_is_downsample` on both
    axes), the spectrum is cropped and inverted at the output size instead.
    """
    h, w = _hw(x, layout)
    py, px = phase
    if (
        crop_spectrum and py == 0 and px == 0
        and crop_is_downsample(h, factor, rule, cutoff)
        and crop_is_downsample(w, factor, rule, cutoff)
    ):
        return crop(x, (h // factor, w // factor), layout=layout)
    y = lowpass(x, cutoff, rule=rule, layout=layout)
    ax_h, ax_w = spatial_axes(layout)
    sl = [slice(None)] * y.ndim
    sl[ax_h] = slice(py, None, factor)
    sl[ax_w] = slice(px, None, factor)
    return y[tuple(sl)]


def crop_is_downsample(n: int, factor: int, rule: str, cutoff: float) -> bool:
    """True when low-pass at `cutoff` + keep every factor-th sample equals a spectrum crop."""
    if n % factor:
        return False
    mask = lowpass_mask_1d(n, cutoff, half=True, rule=rule)
    n_out = n // factor
    k = np.arange(n // 2 + 1)
    inside = k < n_out / 2
    return bool(np.all(mask[inside] == 1.0) and np.all(mask[~inside] == 0.0))


# ----------------------------------------------------------------------------- crop / pad


def _pad_full(spec, axis: int, n: int, m: int):
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


def _pad_half(spec, axis: int, n: int, m: int):
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


def _crop_full(spec, axis: int, n_out: int):
    """Keeps the bins |k| < n_out / 2 of a full (fft) spectrum axis, as an n_out-bin axis."""
    spec = jnp.moveaxis(spec, axis, 0)
    n_in = spec.shape[0]
    kmax = (n_out + 1) // 2 - 1  # largest kept |k|
    parts = [spec[: kmax + 1]]
    if n_out % 2 == 0:  # the output's Nyquist bin is outside the band
        parts.append(jnp.zeros((1,) + spec.shape[1:], spec.dtype))
    if kmax > 0:
        parts.append(spec[n_in - kmax :])
    return jnp.moveaxis(jnp.concatenate(parts, axis=0), 0, axis)


def _crop_half(spec, axis: int, n_out: int):
    """Keeps the bins k < n_out / 2 of an rfft spectrum axis, as n_out // 2 + 1 bins."""
    spec = jnp.moveaxis(spec, axis, 0)
    kmax = (n_out + 1) // 2 - 1
    parts = [spec[: kmax + 1]]
    missing = n_out // 2 + 1 - (kmax + 1)
    if missing:
        parts.append(jnp.zeros((missing,) + spec.shape[1:], spec.dtype))
    return jnp.moveaxis(jnp.concatenate(parts, axis=0), 0, axis)


def upsample(x, factor: int, *, layout: str = "nhwc"):
    """Ideal upsampling by an integer factor > 1: the spectrum zero-padded, times factor^2."""
    h, w = _hw(x, layout)
    ax_h, ax_w = spatial_axes(layout)
    ct = compute_dtype(x.dtype)
    spec = _rfft2(x.astype(ct), layout) * (factor * factor)
    spec = _pad_full(spec, ax_h, h, factor * h)
    spec = _pad_half(spec, ax_w, w, factor * w)
    return _irfft2(spec, (factor * h, factor * w), layout).astype(x.dtype)


def resize(x, out_hw, *, layout: str = "nhwc"):
    """The ideal interpolant of x sampled at out_hw >= (H, W) equispaced points.

    Zero-pads the rfft2 spectrum (the Nyquist bin of an even size split, spec §3) and inverts
    at the larger size.
    """
    h, w = _hw(x, layout)
    ax_h, ax_w = spatial_axes(layout)
    oh, ow = out_hw
    ct = compute_dtype(x.dtype)
    spec = _rfft2(x.astype(ct), layout) * ((oh * ow) / (h * w))
    if oh > h:
        spec = _pad_full(spec, ax_h, h, oh)
    if ow > w:
        spec = _pad_half(spec, ax_w, w, ow)
    return _irfft2(spec, (oh, ow), layout).astype(x.dtype)


def crop(x, out_hw, *, layout: str = "nhwc"):
    """The band |k| < out / 2 of x, sampled at `out_hw` (<= (H, W)) equispaced points.

    rfft2, crop the spectrum, irfft2 at the smaller size (for out = in / f: the strict-rule
    low-pass at 1/f followed by keeping every f-th sample).
    """
    h, w = _hw(x, layout)
    ax_h, ax_w = spatial_axes(layout)
    oh, ow = out_hw
    ct = compute_dtype(x.dtype)
    spec = _rfft2(x.astype(ct), layout)
    spec = _crop_half(_crop_full(spec, ax_h, oh), ax_w, ow) * ((oh * ow) / (h * w))
    return _irfft2(spec, (oh, ow), layout).astype(x.dtype)


# ----------------------------------------------------------------------------- shifts


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


def fractional_shift(x, dy, dx, *, layout: str = "nhwc"):
    """Circular shift by real (dy, dx) through a Fourier phase ramp (see `filters`)."""
    h, w = _hw(x, layout)
    ct = compute_dtype(x.dtype)
    ry = _shift_factors(h, dy, half=False, ct=ct)
    rx = _shift_factors(w, dx, half=True, ct=ct)
    spec = _rfft2(x.astype(ct), layout)
    if layout == "nhwc":
        spec = spec * (ry[:, None, None] * rx[None, :, None])
    else:
        spec = spec * (ry[:, None] * rx[None, :])
    return _irfft2(spec, (h, w), layout).astype(x.dtype)
