"""Ideal filters as small dense matrices, FFT spectrum crop/pad, and the per-layer choice.

Every ideal filter of AFC is linear, separable and acts on one spatial axis at a time. On an axis
of length n it is therefore an (n_out x n) real matrix A, and on a map X (one channel, H x W) the
2D filter is `A_h X A_w^T`: two small matmuls. That is the TPU/MXU-friendly form (TPUs run FFTs
poorly and the maps of a 224 px ConvNeXt are 7..56 wide), and on this project's 2-core CPU it
beats XLA's FFTs for every filter of a 224 px model (`choose_filter_impl`). Arrays are NHWC, or
NCHW where a function takes `layout="nchw"`.

All matrices come from one formula. The band-limited (trigonometric) interpolant of n samples
x_0..x_{n-1}, with the Nyquist bin of an even n split evenly between +-n/2 (spec §3), and
optionally restricted to a band, is

    p(t) = (1/n) sum_j x_j sum_{k=0}^{floor(n/2)} mult_k * mask_k * cos(2 pi k (t - j) / n),

mult_k = 1 for k = 0 and for the Nyquist bin of an even n, 2 otherwise. `interpolation_matrix`
evaluates it at chosen points t_i, so
- `lowpass_matrix(n, c)`: points 0..n-1, mask |k| < c n / 2 (or the official rule);
- `downsample_matrix(n, f)`: points phase + f i (low-pass at 1/f, then keep every f-th sample);
- `upsample_matrix(n, f)`: points i / f, no mask (zero stuffing + low-pass with a split Nyquist
  bin, times f);
- `resample_matrix(n, m)` / `band_resample_matrix(m, n)`: n -> m equispaced points and back
  through the band |k| < n / 2; the fast AFC MLP uses them for its fine grid (`fine_grid_size`).

Matrices are read-only float64 numpy arrays built once per static size (`functools.cache`)
and cast to the compute dtype (float32, or float64 when given float64) where used; like
`afc_jax.ops.fourier`, the apply functions compute in float32 whatever the input dtype and
return the input dtype.

The FFT helpers (`fourier_resize`, `spectral_crop`) do the same maps with rfft2 / irfft2 of the
smaller number of bins: the spectrum is zero-padded (up) or cropped (down) instead of filtering a
zero-stuffed grid or a full-resolution copy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.ops.fourier import (
    _compute_dtype,
    _pair,
    _spectral_pad_full,
    _spectral_pad_half,
    lowpass_mask_1d,
)
from afc_jax.ops.platform import normalize_platform, target_platform

__all__ = [
    "FILTER_IMPLS",
    "LAYOUTS",
    "apply_separable",
    "band_basis",
    "band_resample_matrix",
    "choose_filter_impl",
    "resolve_filter_impl",
    "choose_layout",
    "dense_cost",
    "downsample",
    "downsample_matrix",
    "fine_grid_map",
    "fine_grid_size",
    "fourier_resize",
    "interpolation_matrix",
    "lowpass",
    "lowpass_matrix",
    "resample_matrix",
    "spectral_crop",
    "upsample_matrix",
]


# ----------------------------------------------------------------------------- matrices


def _half_band(n: int, keep_below: float | None) -> np.ndarray:
    """0/1 weights over the rfft bins k = 0..n//2 keeping k < keep_below (all when None)."""
    k = np.arange(n // 2 + 1)
    if keep_below is None:
        return np.ones(n // 2 + 1)
    return (k < keep_below - 1e-9).astype(np.float64)


def interpolation_matrix(n: int, points, mask_half=None) -> np.ndarray:
    """Evaluates the (masked) trigonometric interpolant of n samples at `points`.

    Args:
      n: number of input samples (period n).
      points: 1D array of positions t in input-sample units.
      mask_half: weights over the rfft bins k = 0..n//2 (default: all ones). The Nyquist bin of
        an even n is the split bin of spec §3, so with all ones the matrix is the ideal
        interpolator (identity at integer points).

    Returns:
      float64 array of shape (len(points), n); row i maps x to p(points[i]).
    """
    t = np.asarray(points, np.float64)
    k = np.arange(n // 2 + 1, dtype=np.float64)
    mult = np.full(n // 2 + 1, 2.0)
    mult[0] = 1.0
    if n % 2 == 0:
        mult[-1] = 1.0
    w = mult * (np.ones(n // 2 + 1) if mask_half is None else np.asarray(mask_half, np.float64))
    # (t_i - j) reduced mod n keeps the cosine arguments small and exact for integer points.
    d = np.mod(t[:, None] - np.arange(n)[None, :], n)
    phase = (2.0 * np.pi / n) * d[:, :, None] * k[None, None, :]
    return (np.cos(phase) @ w) / n


@functools.cache
def lowpass_matrix(n: int, cutoff: float, rule: str = "strict") -> np.ndarray:
    """(n x n) ideal low-pass keeping |k| < cutoff n / 2 (see `afc_jax.ops.fourier`)."""
    return _readonly(interpolation_matrix(n, np.arange(n), lowpass_mask_1d(n, cutoff, half=True,
                                                                           rule=rule)))


@functools.cache
def downsample_matrix(
    n: int, factor: int, rule: str = "strict", phase: int = 0, cutoff: float | None = None
) -> np.ndarray:
    """(ceil((n - phase) / factor) x n): ideal low-pass at `cutoff` (default 1/factor), then
    keep samples phase, phase + factor, ... (`ideal_downsample` / `IdealBlurPool`)."""
    factor = int(factor)
    if factor < 1 or not 0 <= phase < factor:
        raise ValueError(f"need factor >= 1 and 0 <= phase < factor, got {factor}, {phase}")
    cutoff = 1.0 / factor if cutoff is None else cutoff
    mask = lowpass_mask_1d(n, cutoff, half=True, rule=rule)
    return _readonly(interpolation_matrix(n, np.arange(phase, n, factor), mask))


@functools.cache
def upsample_matrix(n: int, factor: int = 2) -> np.ndarray:
    """(factor n x n) ideal upsampling (`ideal_upsample`); the input stays on every f-th row."""
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}")
    return _readonly(interpolation_matrix(n, np.arange(factor * n) / factor))


@functools.cache
def resample_matrix(n: int, m: int) -> np.ndarray:
    """(m x n): the ideal interpolant of n samples at m equispaced points (i n / m).

    For m = f n this is `upsample_matrix(n, f)`; for m >= n + 1 it keeps every bin (the split
    Nyquist bins of an even n land on two distinct bins of the m grid).
    """
    return _readonly(interpolation_matrix(n, np.arange(m) * (n / m)))


@functools.cache
def band_resample_matrix(m: int, n: int) -> np.ndarray:
    """(n x m): keep the bins |k| < n / 2 of m samples and evaluate them at n equispaced points.

    With m = 2 n this is `downsample_matrix(2 n, 2)` (low-pass at 1/2 and keep the even samples),
    under either filter rule.
    """
    if m < n:
        raise ValueError(f"band_resample_matrix maps a finer grid to a coarser one; got {m} -> {n}")
    return _readonly(interpolation_matrix(m, np.arange(n) * (m / n), _half_band(m, n / 2)))


def fine_grid_size(n: int) -> int:
    """Smallest grid on which the square of the ideal interpolant of n samples is alias-free in
    the band |k| < n / 2 that the AFC MLP keeps.

    The interpolant has degree floor(n/2) (the split Nyquist bin of an even n), its square
    2 floor(n/2); on an m grid the bin k receives k +- m, so the kept bins |k| <= ceil(n/2) - 1
    stay clean when m - (ceil(n/2) - 1) > 2 floor(n/2). Even n: m = 3n/2 (84 for 56); odd n:
    m = (3n - 1)/2 (10 for 7). The official 2x grid is one such grid.
    """
    return 2 * (n // 2) + (n + 1) // 2


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


# ----------------------------------------------------------------------------- layouts

LAYOUTS = ("nhwc", "nchw")
FILTER_IMPLS = ("fft", "matrix")
HIGHEST = jax.lax.Precision.HIGHEST


def filter_precision(dtype) -> jax.lax.Precision:
    """Precision of the filter-matrix products for an input of `dtype` (the compute dtype).

    The products always take and return float32; the precision says how a TPU computes them
    (CPUs ignore it). HIGHEST (float32-exact, 6 bfloat16 passes on a TPU) everywhere, except
    for 16-bit compute on a TPU: DEFAULT (one bfloat16 pass). Measured (issue 12):
    - invariance, TPU passes emulated on the CPU (`python -m benchmarks.tpu_precision`, nano AFC
      at 64 px, max relative logit change over integer and half-pixel shifts): with bfloat16
      compute 8.0e-3 for exact float32 filters, 6.8-8.0e-3 at HIGHEST, 6.8e-3 at HIGH,
      6.8-7.7e-3 at DEFAULT (two runs): the bfloat16 activations set the error, the filters'
      precision does not;
    - cost, TPU compiler (`python -m benchmarks.tpu_compile.mlp`: one AFC MLP at stage 1 of
      AFC-T, 32 images on one v5e chip, forward + backward): HIGHEST and HIGH 5.13 GB
      accessed, DEFAULT 3.87 GB (the split of float32 operands into bfloat16 parts is
      materialised), 3.51 GB with bfloat16 operands and intermediates (`_operand_dtype`).
    Float32 compute keeps HIGHEST: DEFAULT there moves float32 AFC logits by ~5e-3 under shifts
    instead of ~2e-7.
    """
    if jnp.dtype(dtype).itemsize <= 2 and target_platform() == "tpu":
        return jax.lax.Precision.DEFAULT
    return HIGHEST


def spatial_axes(layout: str) -> tuple[int, int]:
    """(H axis, W axis) of an array in `layout`: (-3, -2) for "nhwc", (-2, -1) for "nchw"."""
    if layout == "nhwc":
        return (-3, -2)
    if layout == "nchw":
        return (-2, -1)
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def _const(mat, ct):
    return None if mat is None else jnp.asarray(mat, ct)


def _operand_dtype(precision, ct):
    """bfloat16 operands for one-pass (DEFAULT) products: the pass rounds them to bfloat16
    anyway, and storing them so halves the bytes of every intermediate; else `ct`."""
    return jnp.bfloat16 if precision == jax.lax.Precision.DEFAULT else ct


def _acc(dtype):
    """Accumulator dtype of a product of `dtype` operands: float32, float64 for float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _rows_last(y, mat, precision=HIGHEST, out=None):
    """y (..., n) -> (..., m) with y @ mat^T: one plain GEMM over every leading axis.

    Accumulates in float32; returns `out` (default y's dtype)."""
    r = jnp.matmul(y, mat.T, precision=precision, preferred_element_type=_acc(y.dtype))
    return r.astype(out or y.dtype)


def _shared_lhs_bmm(mat, y, precision=HIGHEST):
    """mat (m, k) times every y[g] (k, n): a batched GEMM with the (tiny) matrix broadcast, so
    the operand keeps its memory layout (no transposes of the large array)."""
    lhs = jnp.broadcast_to(mat, (y.shape[0],) + mat.shape)
    r = jax.lax.dot_general(
        lhs, y, (((2,), (1,)), ((0,), (0,))), precision=precision,
        preferred_element_type=_acc(y.dtype),
    )
    return r.astype(y.dtype)


def _nhwc_axis(y, mat, axis: str, precision=HIGHEST):
    """Applies mat along H or W of a (G, H, W, C) array.

    H: a batched GEMM over G with the matrix broadcast (G copies, tiny). W: the same over G*H
    when the G*H copies of the matrix are no larger than the array (M <= C), otherwise a plain
    contraction (XLA transposes the array around one GEMM).
    """
    g, h, w, c = y.shape
    m = mat.shape[0]
    if axis == "h":
        return _shared_lhs_bmm(mat, y.reshape(g, h, w * c), precision).reshape(g, m, w, c)
    if m <= c:
        return _shared_lhs_bmm(mat, y.reshape(g * h, w, c), precision).reshape(g, h, m, c)
    r = jnp.einsum(
        "ghwc,vw->ghvc", y, mat, precision=precision, preferred_element_type=_acc(y.dtype)
    )
    return r.astype(y.dtype)


def apply_separable(x, mat_h, mat_w, *, layout: str = "nhwc", precision=None):
    """`A_h X A_w^T` on every (H, W) slice of x.

    Args:
      x: (..., H, W, C) array ("nhwc") or (..., C, H, W) array ("nchw").
      mat_h: (H_out, H) matrix or None (identity).
      mat_w: (W_out, W) matrix or None (identity).
      layout: where the spatial axes are.
      precision: of the products (default `filter_precision(x.dtype)`).

    Returns:
      Array of the input dtype with H, W replaced by H_out, W_out, computed in float32 (float64
      for float64 input). NHWC applies each axis as a batched GEMM in place (the axis that
      costs less goes first); NCHW applies W as one GEMM and H through an einsum.
    """
    ax_h, _ = spatial_axes(layout)
    if x.ndim < -ax_h:
        raise ValueError(f"apply_separable expects a {layout} array, got shape {x.shape}")
    ct = _compute_dtype(x.dtype)
    prec = filter_precision(x.dtype) if precision is None else precision
    ct = _operand_dtype(prec, ct)
    y = x.astype(ct)
    mh, mw = _const(mat_h, ct), _const(mat_w, ct)
    if layout == "nhwc":
        lead = y.shape[:-3]
        h, w, c = y.shape[-3:]
        y = y.reshape((-1, h, w, c))
        oh = h if mh is None else mh.shape[0]
        ow = w if mw is None else mw.shape[0]
        # MACs per channel: H first = oh*h*w + ow*w*oh; W first = ow*w*h + oh*h*ow.
        h_first = oh * h * w + ow * w * oh <= ow * w * h + oh * h * ow
        steps = [("h", mh), ("w", mw)] if h_first else [("w", mw), ("h", mh)]
        for axis, mat in steps:
            if mat is not None:
                y = _nhwc_axis(y, mat, axis, prec)
        y = y.reshape(lead + y.shape[1:])
    else:
        if mw is not None:
            y = _rows_last(y, mw, prec)
        if mh is not None:
            y = jnp.einsum(
                "...hv,uh->...uv", y, mh, precision=prec, preferred_element_type=_acc(y.dtype)
            ).astype(y.dtype)
    return y.astype(x.dtype)


# ----------------------------------------------------------------------------- FFT helpers


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


def _rfft2(x, layout):
    return jnp.fft.rfft2(x, axes=spatial_axes(layout))


def _irfft2(spec, hw, layout):
    return jnp.fft.irfft2(spec, s=tuple(hw), axes=spatial_axes(layout))


def spectral_crop(x, out_hw, *, layout: str = "nhwc", spec=None):
    """The band |k| < out / 2 of x, sampled at `out_hw` (<= the input size) equispaced points.

    rfft2, crop the spectrum, irfft2 at the smaller size: `band_resample_matrix` on both axes
    (for out = in / f: the strict-rule low-pass at 1/f followed by keeping every f-th sample).
    `spec` may pass the rfft2 of x when it is already known.
    """
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    oh, ow = _pair(out_hw, "out_hw")
    if oh > h or ow > w:
        raise ValueError(f"spectral_crop cannot enlarge {(h, w)} to {(oh, ow)}")
    ct = _compute_dtype(x.dtype)
    if spec is None:
        spec = _rfft2(x.astype(ct), layout)
    spec = _crop_half(_crop_full(spec, ax_h, oh), ax_w, ow) * ((oh * ow) / (h * w))
    return _irfft2(spec, (oh, ow), layout).astype(x.dtype)


def fourier_resize(x, out_hw, *, layout: str = "nhwc", spec=None):
    """The ideal interpolant of x sampled at out_hw >= (H, W) equispaced points.

    Zero-pads the rfft2 spectrum (the Nyquist bin of an even size split, spec §3) and inverts
    at the larger size: `resample_matrix` on both axes, `ideal_upsample` for out = f (H, W).
    `spec` may pass the rfft2 of x when it is already known.
    """
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    oh, ow = _pair(out_hw, "out_hw")
    if oh < h or ow < w:
        raise ValueError(f"fourier_resize cannot shrink {(h, w)} to {(oh, ow)}")
    ct = _compute_dtype(x.dtype)
    if spec is None:
        spec = _rfft2(x.astype(ct), layout)
    spec = spec * ((oh * ow) / (h * w))
    if oh > h:
        spec = _spectral_pad_full(spec, ax_h, h, oh)
    if ow > w:
        spec = _spectral_pad_half(spec, ax_w, w, ow)
    return _irfft2(spec, (oh, ow), layout).astype(x.dtype)


# ----------------------------------------------------------------------------- fine grid


def fine_grid_map(v, fn, *, impl: str = "matrix", layout: str = "nhwc", grid=None):
    """`band_resample(fn(resample(v, grid)), (H, W))`: a pointwise map on an alias-free fine grid.

    The input is interpolated ideally onto a (Mh, Mw) grid (default `fine_grid_size` per axis),
    `fn` is applied there, and the result is brought back through the band |k| < (H, W) / 2.
    For a polynomial fn of degree <= 2 this equals the official 2x-grid computation
    `ideal_downsample(fn(ideal_upsample(v, 2)), 2)` exactly (in exact arithmetic).

    Args:
      v: array in `layout` (float32 or float64; other dtypes are computed in float32).
      fn: elementwise function of the fine-grid array (same layout; it receives the compute
        dtype).
      impl: "matrix" (four small GEMMs) or "fft" (spectrum pad / crop).
      layout: "nhwc" or "nchw".
      grid: (Mh, Mw) fine grid (each >= the alias-free minimum), default the minimum.

    Returns:
      Array of v's shape and dtype.
    """
    ax_h, ax_w = spatial_axes(layout)
    h, w = v.shape[ax_h], v.shape[ax_w]
    mh, mw = grid if grid is not None else (fine_grid_size(h), fine_grid_size(w))
    if mh < fine_grid_size(h) or mw < fine_grid_size(w):
        raise ValueError(
            f"fine grid {(mh, mw)} aliases for a {(h, w)} map; need at least "
            f"{(fine_grid_size(h), fine_grid_size(w))}"
        )
    ct = _compute_dtype(v.dtype)
    y = v.astype(ct)
    if impl == "fft":
        p = fourier_resize(y, (mh, mw), layout=layout)
        out = spectral_crop(fn(p), (h, w), layout=layout)
    elif impl == "matrix":
        prec = filter_precision(v.dtype)
        if layout == "nchw":
            # Every product is a plain GEMM on the last axis; the map is transposed twice
            # (W-first orientation on the fine grid, where fn does not care). fn sees the
            # float32 accumulator; operands are `_operand_dtype` (bfloat16 for one pass).
            od = _operand_dtype(prec, ct)
            uh, uw = (jnp.asarray(resample_matrix(n, m), od) for n, m in ((h, mh), (w, mw)))
            dh, dw = (jnp.asarray(band_resample_matrix(m, n), od) for n, m in ((h, mh), (w, mw)))
            t = jnp.swapaxes(_rows_last(y.astype(od), uw, prec), -1, -2)  # (..., Mw, H)
            p = _rows_last(t, uh, prec, out=ct)  # (..., Mw, Mh)
            q = fn(p).astype(od)
            t = jnp.swapaxes(_rows_last(q, dh, prec), -1, -2)  # (..., H, Mw)
            out = _rows_last(t, dw, prec, out=ct)
        else:
            uh = jnp.asarray(resample_matrix(h, mh), ct)
            uw = jnp.asarray(resample_matrix(w, mw), ct)
            dh = jnp.asarray(band_resample_matrix(mh, h), ct)
            dw = jnp.asarray(band_resample_matrix(mw, w), ct)
            p = apply_separable(y, uh, uw, layout=layout, precision=prec)
            out = apply_separable(fn(p), dh, dw, layout=layout, precision=prec)
    else:
        raise ValueError(f"unknown filter implementation {impl!r}; choose one of {FILTER_IMPLS}")
    return out.astype(v.dtype)


# ----------------------------------------------------------------------------- filters by impl


def _fft_crop_ok(n: int, factor: int, rule: str, cutoff: float) -> bool:
    """True when low-pass at `cutoff` + keep every factor-th sample equals a spectrum crop."""
    if n % factor:
        return False
    mask = lowpass_mask_1d(n, cutoff, half=True, rule=rule)
    n_out = n // factor
    k = np.arange(n // 2 + 1)
    inside = k < n_out / 2
    return bool(np.all(mask[inside] == 1.0) and np.all(mask[~inside] == 0.0))


def downsample(
    x, factor: int, *, rule: str = "strict", cutoff: float | None = None, impl: str = "fft",
    layout: str = "nhwc",
):
    """Ideal low-pass at `cutoff` (default 1/factor) then keep every factor-th sample (phase 0).

    impl "fft": spectrum crop when that is the same map (H, W divisible by the factor and the
    band exactly |k| < out / 2, true for every model size), otherwise `ideal_lowpass` and a
    strided slice; "matrix": `downsample_matrix` on both axes (any size, rule and cutoff).
    """
    factor = int(factor)
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    c = 1.0 / factor if cutoff is None else float(cutoff)
    if factor == 1 and cutoff is None:
        return x
    if impl == "matrix":
        return apply_separable(
            x,
            downsample_matrix(h, factor, rule, 0, c),
            downsample_matrix(w, factor, rule, 0, c),
            layout=layout,
        )
    if impl != "fft":
        raise ValueError(f"unknown filter implementation {impl!r}; choose one of {FILTER_IMPLS}")
    if _fft_crop_ok(h, factor, rule, c) and _fft_crop_ok(w, factor, rule, c):
        return spectral_crop(x, (h // factor, w // factor), layout=layout)
    y = lowpass(x, c, rule=rule, impl="fft", layout=layout)
    sl = [slice(None)] * y.ndim
    sl[ax_h] = slice(None, None, factor)
    sl[ax_w] = slice(None, None, factor)
    return y[tuple(sl)]


def lowpass(x, cutoff, *, rule: str = "strict", impl: str = "fft", layout: str = "nhwc"):
    """Ideal low-pass (`afc_jax.ops.fourier.ideal_lowpass`) by FFT or by matrices, any layout."""
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    ch, cw = _pair(cutoff, "cutoff")
    if impl == "matrix":
        return apply_separable(
            x, lowpass_matrix(h, float(ch), rule), lowpass_matrix(w, float(cw), rule),
            layout=layout,
        )
    if impl != "fft":
        raise ValueError(f"unknown filter implementation {impl!r}; choose one of {FILTER_IMPLS}")
    ct = _compute_dtype(x.dtype)
    mask = np.outer(
        lowpass_mask_1d(h, ch, rule=rule), lowpass_mask_1d(w, cw, half=True, rule=rule)
    )
    if layout == "nhwc":
        mask = mask[:, :, None]
    spec = _rfft2(x.astype(ct), layout) * jnp.asarray(mask, ct)
    return _irfft2(spec, (h, w), layout).astype(x.dtype)


# ----------------------------------------------------------------------------- choice rule


# Dense-form cost (multiply-adds per sample of the larger grid) above which the FFT is used.
# CPU, measured by `python -m benchmarks.run` (sections "filters" and "models", 2-core EPYC):
# every filter of a 224 px AFC-T is faster by matrix in wall time, including the stem's
# 224x224 low-pass (448 MACs/sample: 0.66 s by matrix vs 0.85 s by FFT for batch 8; XLA's
# GEMMs keep both cores busy, its FFTs about 1.4) at the same peak training memory, and the
# stride-2/4 filters are 2.5-6x faster. GPU: not measured here; cuFFT is fast, so the FFT takes
# over earlier. TPU: always matrices (MXU GEMMs). Measured by the TPU compiler (issue 12: the
# AFC-T train step, 32 images per chip on v5e:2x2, bfloat16, `python -m benchmarks.tpu_compile`):
# filter_impl="fft" costs 2.6 TFLOP and 549 GB accessed per chip and step, "matrix" 1.38 TFLOP
# and 109 GB.
DENSE_COST_LIMIT = {"cpu": 512.0, "gpu": 256.0}


def dense_cost(n_in: int, n_out: int) -> float:
    """Multiply-adds per sample of the larger grid for the separable dense n_in -> n_out map."""
    return (n_out * n_in * n_in + n_out * n_out * n_in) / max(n_in, n_out) ** 2


def _op_sizes(op: str, size: int) -> list[tuple[int, int]]:
    if op == "lowpass":
        return [(size, size)]
    if op.startswith("downsample"):
        factor = int(op[len("downsample"):] or 2)
        return [(size, -(-size // factor))]
    if op == "mlp_fast":
        m = fine_grid_size(size)
        return [(size, m), (m, size)]
    if op == "mlp_reference":
        return [(size, 2 * size), (2 * size, size)]
    raise ValueError(f"unknown filter op {op!r}")


def choose_filter_impl(op: str, size: int, channels: int, backend: str | None = None) -> str:
    """The filter implementation "auto" resolves to, per layer.

    Args:
      op: "lowpass" (full-size low-pass, the stem polynomial), "downsample<s>" (low-pass and
        keep every s-th sample), "mlp_fast" (N -> fine grid -> N) or "mlp_reference"
        (N -> 2N -> N).
      size: the longest spatial axis of the layer's input.
      channels: channel count (both forms scale linearly with it; kept for future rules).
      backend: "cpu", "gpu" or "tpu" (default: the target platform,
        `afc_jax.ops.platform.target_platform()`, which is not the host's backend when
        compiling ahead of time for a TPU on a CPU host).

    Rule: TPU -> "matrix" always. CPU/GPU -> "matrix" when the dense separable form costs at most
    DENSE_COST_LIMIT[backend] multiply-adds per sample (`dense_cost`), else "fft". For a 224 px
    ConvNeXt the costs are 448 (the stem's 224x224 low-pass: of the 3-channel image in the fast
    formulation, of the 96-channel conv output in the reference one), 70 (its stride-4 filter),
    <= 42 (the stride-2 filters) and <= 93 (each MLP resampling, fast or reference): all
    "matrix" on the CPU (limit 512, so the FFT takes the full-size low-pass of inputs above
    256 px); on a GPU (limit 256) the stem's 224x224 low-pass goes to the FFT.
    """
    del channels
    backend = normalize_platform(backend) if backend else target_platform()
    if backend == "tpu":
        return "matrix"
    limit = DENSE_COST_LIMIT.get(backend, DENSE_COST_LIMIT["cpu"])
    cost = max(dense_cost(a, b) for a, b in _op_sizes(op, size))
    return "matrix" if cost <= limit else "fft"


def resolve_filter_impl(impl: str, op: str, shape) -> str:
    """`impl`, or for "auto" `choose_filter_impl(op, ...)` of an (..., H, W, C) input shape."""
    if impl != "auto":
        return impl
    h, w, c = shape[-3:]
    return choose_filter_impl(op, max(h, w), c)


def choose_layout(size: int, channels: int, impl: str = "matrix", backend=None) -> str:
    """Layout of the fast MLP's hidden (4C) map while its fine-grid filters run.

    FFT: "nchw" (the transforms then run on the two minor axes; in NHWC XLA transposes around
    every transform). Matrix: "nchw" (each filter a plain GEMM on the last axis, two transposes
    of the fine map) for maps of 40 px and more, "nhwc" (batched GEMMs in place, no transposes)
    for smaller maps, where the transposes cost more than they save. Measured on the CPU at
    the four ConvNeXt-T stages (`python -m benchmarks.run --sections mlp`). On a TPU (`backend`,
    default the target platform): "nchw" at every size. TPU compiler, one AFC MLP forward +
    backward, 32 images on one v5e chip, bfloat16 (`python -m benchmarks.tpu_compile.mlp
    --layout nchw|nhwc`): GB accessed at the ConvNeXt-T stages (56, 28, 14, 7 px) nchw 3.87,
    2.25, 1.15, 0.77; nhwc 9.2 (at HIGHEST filter precision; 5.1 for nchw there), 4.22, 2.09,
    1.33.
    """
    del channels
    if impl == "fft":
        return "nchw"
    platform = normalize_platform(backend) if backend else target_platform()
    if platform == "tpu":
        return "nchw"
    return "nchw" if size >= 40 else "nhwc"


@functools.cache
def band_basis(n: int, cutoff: float, rule: str = "strict", keep: bool = True) -> np.ndarray:
    """(n x r) orthonormal real basis of the bins a low-pass keeps (`keep`) or removes.

    `B @ B.T` is `lowpass_matrix(n, cutoff, rule)` (keep) or its complement; with r < n / 2 the
    two thin products `B @ (B.T @ x)` cost 2 r n per column instead of n^2.
    """
    mask = lowpass_mask_1d(n, cutoff, half=True, rule=rule) > 0.5
    if not keep:
        mask = ~mask
    j = np.arange(n)
    cols = []
    for k in np.nonzero(mask)[0]:
        if k == 0 or (n % 2 == 0 and k == n // 2):
            cols.append(np.cos(np.pi * k * 2 * j / n) / np.sqrt(n))
        else:
            cols.append(np.sqrt(2.0 / n) * np.cos(2 * np.pi * k * j / n))
            cols.append(np.sqrt(2.0 / n) * np.sin(2 * np.pi * k * j / n))
    out = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
    return _readonly(out)
