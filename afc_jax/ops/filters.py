"""The ideal (Fourier-domain) filters of AFC, each by FFT or by dense matrices, in either layout.

One function per filter, named for what it computes:
- `ideal_lowpass`: keep the DFT bins below a cutoff;
- `ideal_downsample`: low-pass at 1/factor (or a given cutoff), keep every factor-th sample;
- `ideal_upsample`: the band-limited interpolant at factor x the samples;
- `ideal_resize`: the band-limited interpolant at more samples, or the band |k| < out / 2 at
  fewer;
- `fine_grid_map`: a pointwise function on an alias-free finer grid and back (the AFC MLP);
- `fractional_shift`: circular shift by real amounts.

Arrays are (..., H, W, C) for layout="nhwc" (the default) or (..., C, H, W) for "nchw", with
any leading batch dims and any H, W. Every filter computes in float32 (float64 when given
float64) and returns the input dtype. `impl` is one of FILTER_IMPLS: "fft" (rfft2 with spectrum
masks, crops and pads: `afc_jax.ops.spectral`), "matrix" (separable dense matrices:
`afc_jax.ops.filter_matrices`) or "auto" (per call from the map size and the target platform:
`afc_jax.ops.filter_choice`). All implementations agree to float32 round-off; band rules and
the Nyquist convention are in `afc_jax.ops.spectral`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from afc_jax.ops import filter_matrices, spectral
from afc_jax.ops.filter_choice import (
    FILTER_IMPLS,
    choose_downsample_layout,
    resolve_filter_impl,
)
from afc_jax.ops.filter_matrices import fine_grid_size
from afc_jax.ops.spectral import FILTER_RULES, LAYOUTS, as_pair, compute_dtype, spatial_axes

__all__ = [
    "FILTER_IMPLS",
    "FILTER_RULES",
    "LAYOUTS",
    "fine_grid_map",
    "fine_grid_size",
    "fractional_shift",
    "ideal_downsample",
    "ideal_lowpass",
    "ideal_resize",
    "ideal_upsample",
]


def _check_spatial(x, layout: str, fn: str) -> tuple[int, int]:
    ax_h, ax_w = spatial_axes(layout)
    if x.ndim < 3:
        shape = "(..., H, W, C)" if layout == "nhwc" else "(..., C, H, W)"
        raise ValueError(f"{fn} expects an array of shape {shape}; got shape {x.shape}")
    h, w = x.shape[ax_h], x.shape[ax_w]
    if h < 1 or w < 1:
        raise ValueError(f"{fn} got an empty spatial size {(h, w)}")
    return h, w


def _factor(factor, what: str) -> int:
    if int(factor) != factor or factor < 1:
        raise ValueError(f"{what} factor must be a positive integer, got {factor!r}")
    return int(factor)


def ideal_lowpass(
    x: jax.Array, cutoff, *, rule: str = "strict", impl: str = "fft", layout: str = "nhwc"
) -> jax.Array:
    """Ideal low-pass filter over (H, W): zero every DFT bin at or above the cutoff.

    Args:
      x: (..., H, W, C) array ("nhwc") or (..., C, H, W) ("nchw").
      cutoff: fraction of Nyquist kept, a number or a (cutoff_h, cutoff_w) pair.
      rule: "strict" (|k| < cutoff N / 2, the default) or "official" (the PyTorch rule).
      impl: "fft" (default), "matrix" or "auto".
      layout: "nhwc" or "nchw".

    Returns:
      Array of x's shape and dtype.
    """
    h, w = _check_spatial(x, layout, "ideal_lowpass")
    if resolve_filter_impl(impl, "lowpass", max(h, w)) == "matrix":
        return filter_matrices.lowpass(x, as_pair(cutoff, "cutoff"), rule=rule, layout=layout)
    return spectral.lowpass(x, cutoff, rule=rule, layout=layout)


def ideal_downsample(
    x: jax.Array, factor: int = 2, *, phase=(0, 0), rule: str = "strict",
    cutoff: float | None = None, impl: str = "fft", layout: str = "nhwc",
    crop_spectrum: bool = False,
) -> jax.Array:
    """Ideal low-pass at `cutoff` (default 1/factor of Nyquist), then keep every factor-th
    sample from `phase`.

    Args:
      x: (..., H, W, C) array ("nhwc") or (..., C, H, W) ("nchw").
      factor: integer stride >= 1.
      phase: (row, column) offset of the kept sample grid, each in [0, factor).
      rule: low-pass rule, see `ideal_lowpass`.
      cutoff: low-pass cutoff (fraction of Nyquist); None: 1/factor.
      impl: "fft" (default), "matrix" or "auto".
      layout: "nhwc" or "nchw".
      crop_spectrum: "fft" only: where it is the same map (phase 0, H and W divisible by the
        factor and the band exactly |k| < out / 2, true for every model size), crop the
        spectrum and invert at the output size instead of a full-size round trip and a strided
        slice. Cheaper; False (the default) keeps the full-size form the layers' default uses.

    Returns:
      (..., ceil((H - py) / factor), ceil((W - px) / factor), C) array ("nhwc"; "nchw" alike).
    """
    factor = _factor(factor, "downsampling")
    py, px = (int(p) for p in as_pair(phase, "phase"))
    if not (0 <= py < factor and 0 <= px < factor):
        raise ValueError(f"phase must lie in [0, {factor}), got {phase!r}")
    h, w = _check_spatial(x, layout, "ideal_downsample")
    if factor == 1 and cutoff is None:
        return x
    c = 1.0 / factor if cutoff is None else float(cutoff)
    if resolve_filter_impl(impl, f"downsample{factor}", max(h, w)) == "matrix":
        kw = dict(phase=(py, px), rule=rule, cutoff=c)
        if layout == "nhwc" and choose_downsample_layout() == "nchw":
            y = filter_matrices.downsample(jnp.moveaxis(x, -1, -3), factor, layout="nchw", **kw)
            return jnp.moveaxis(y, -3, -1)
        return filter_matrices.downsample(x, factor, layout=layout, **kw)
    return spectral.downsample(
        x, factor, phase=(py, px), rule=rule, cutoff=c, layout=layout, crop_spectrum=crop_spectrum
    )


def ideal_upsample(
    x: jax.Array, factor: int = 2, *, impl: str = "fft", layout: str = "nhwc"
) -> jax.Array:
    """Ideal (band-limited) upsampling by an integer factor on both spatial axes.

    Equivalent to inserting factor-1 zeros after every sample and low-passing the fine grid
    (with the Nyquist bin of an even axis split between its two images), times factor per axis.
    The input samples are kept: `ideal_upsample(x, f)[..., ::f, ::f, :] == x` (NHWC).

    Args:
      x: (..., H, W, C) array ("nhwc") or (..., C, H, W) ("nchw").
      factor: integer >= 1.
      impl: "fft" (default), "matrix" or "auto".
      layout: "nhwc" or "nchw".

    Returns:
      (..., factor*H, factor*W, C) array ("nhwc"; "nchw" alike) of x's dtype.
    """
    factor = _factor(factor, "upsampling")
    h, w = _check_spatial(x, layout, "ideal_upsample")
    if factor == 1:
        return x
    if resolve_filter_impl(impl, f"upsample{factor}", max(h, w)) == "matrix":
        return filter_matrices.upsample(x, factor, layout=layout)
    return spectral.upsample(x, factor, layout=layout)


def ideal_resize(
    x: jax.Array, out_hw, *, impl: str = "fft", layout: str = "nhwc"
) -> jax.Array:
    """x on an (Ho, Wo) grid: the ideal interpolant at Ho x Wo >= H x W equispaced points, or
    the band |k| < (Ho, Wo) / 2 sampled there for Ho x Wo <= H x W.

    Up, "fft" zero-pads the spectrum (Nyquist bin of an even size split, spec §3) and "matrix"
    is `resample_matrix`; `ideal_upsample` is the case (Ho, Wo) = f (H, W). Down, "fft" crops
    the spectrum and "matrix" is `band_resample_matrix`; for (Ho, Wo) = (H, W) / f this is the
    strict-rule `ideal_downsample`.

    Args:
      x: (..., H, W, C) array ("nhwc") or (..., C, H, W) ("nchw").
      out_hw: (Ho, Wo), both >= or both <= (H, W); an int for both.
      impl: "fft" (default), "matrix" or "auto".
      layout: "nhwc" or "nchw".

    Returns:
      (..., Ho, Wo, C) array ("nhwc"; "nchw" alike) of x's dtype.
    """
    h, w = _check_spatial(x, layout, "ideal_resize")
    oh, ow = (int(n) for n in as_pair(out_hw, "out_hw"))
    up, down = oh >= h and ow >= w, oh <= h and ow <= w
    if not (up or down) or min(oh, ow) < 1:
        raise ValueError(f"ideal_resize maps {(h, w)} to a grid on one side of it, got {(oh, ow)}")
    n, m = (h, oh) if h >= w else (w, ow)
    if resolve_filter_impl(impl, f"resize{m}", n) == "matrix":
        return filter_matrices.resize(x, (oh, ow), layout=layout)
    if up:
        return spectral.resize(x, (oh, ow), layout=layout)
    return spectral.crop(x, (oh, ow), layout=layout)


def fine_grid_map(
    v: jax.Array, fn, *, impl: str = "matrix", layout: str = "nhwc", grid=None
) -> jax.Array:
    """`band(fn(interp(v)))`: a pointwise map on an alias-free fine grid.

    The input is interpolated ideally onto an (Mh, Mw) grid (default `fine_grid_size` per axis),
    `fn` is applied there, and the result is brought back through the band |k| < (H, W) / 2
    (`ideal_resize` there and back). For a polynomial fn of degree <= 2 this equals the official
    2x-grid computation `ideal_downsample(fn(ideal_upsample(v, 2)), 2)` exactly (in exact
    arithmetic).

    Args:
      v: (..., H, W, C) array ("nhwc") or (..., C, H, W) ("nchw").
      fn: elementwise function of the fine-grid array (same layout; it receives the compute
        dtype, or bfloat16 where the matrix products run at one bfloat16 pass: 16-bit compute
        on a TPU, `filter_matrices.filter_precision`).
      impl: "matrix" (default: four small GEMMs), "fft" (spectrum pad / crop) or "auto".
      layout: "nhwc" or "nchw".
      grid: (Mh, Mw) fine grid (each >= the alias-free minimum), default the minimum.

    Returns:
      Array of v's shape and dtype.
    """
    h, w = _check_spatial(v, layout, "fine_grid_map")
    mh, mw = grid if grid is not None else (fine_grid_size(h), fine_grid_size(w))
    if mh < fine_grid_size(h) or mw < fine_grid_size(w):
        raise ValueError(
            f"fine grid {(mh, mw)} aliases for a {(h, w)} map; need at least "
            f"{(fine_grid_size(h), fine_grid_size(w))}"
        )
    if resolve_filter_impl(impl, "mlp_fast", max(h, w)) == "matrix":
        out = filter_matrices.fine_grid_map(v, fn, (mh, mw), layout=layout)
    else:
        y = v.astype(compute_dtype(v.dtype))
        p = spectral.resize(y, (mh, mw), layout=layout)
        out = spectral.crop(fn(p), (h, w), layout=layout)
    return out.astype(v.dtype)


def _is_static_integer(v) -> bool:
    if isinstance(v, jax.core.Tracer):
        return False
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == round(f)


def fractional_shift(x: jax.Array, shift, *, layout: str = "nhwc") -> jax.Array:
    """Circularly shifts the spatial axes by real amounts (dy, dx) with a Fourier phase ramp.

    `y[i, j] = x(i - dy, j - dx)` for the band-limited interpolant of x: content moves towards
    higher indices, like `jnp.roll(x, (dy, dx), axis=(H, W))`, which it equals for integer
    shifts (exactly when the shifts are static Python integers, to rounding when traced).
    FFT only: the shift may be traced, so no static matrix exists.

    Args:
      x: (..., H, W, C) array ("nhwc") or (..., C, H, W) ("nchw").
      shift: (dy, dx); each a Python number or a scalar (possibly traced) array.
      layout: "nhwc" or "nchw".

    Returns:
      Array of x's shape and dtype.
    """
    _check_spatial(x, layout, "fractional_shift")
    dy, dx = as_pair(shift, "shift")
    if _is_static_integer(dy) and _is_static_integer(dx):
        shifts = (int(round(float(dy))), int(round(float(dx))))
        return jnp.roll(x, shifts, axis=spatial_axes(layout))
    return spectral.fractional_shift(x, dy, dx, layout=layout)
