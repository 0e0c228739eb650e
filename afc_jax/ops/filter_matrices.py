"""Matrix implementation of the ideal filters: small dense matrices applied separably.

Every ideal filter of AFC is linear, separable and acts on one spatial axis at a time. On an axis
of length n it is therefore an (n_out x n) real matrix A, and on a map X (one channel, H x W) the
2D filter is `A_h X A_w^T`: two small matmuls. That is the TPU/MXU-friendly form (TPUs run FFTs
poorly and the maps of a 224 px ConvNeXt are 7..56 wide), and on a 2-core CPU it beats XLA's
FFTs for every filter of a 224 px model (`afc_jax.ops.filter_choice`). Arrays are (..., H, W, C)
("nhwc") or (..., C, H, W) ("nchw"). Callers normally use `afc_jax.ops.filters`.

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
and cast to the compute dtype (float32, or float64 when given float64) where used; the apply
functions compute in float32 whatever the input dtype and return the input dtype. The products'
precision is `filter_precision`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.ops.platform import target_platform
from afc_jax.ops.spectral import compute_dtype, lowpass_mask_1d, spatial_axes

__all__ = [
    "HIGHEST",
    "apply_separable",
    "band_resample_matrix",
    "downsample",
    "downsample_matrix",
    "filter_precision",
    "fine_grid_map",
    "fine_grid_size",
    "interpolation_matrix",
    "lowpass",
    "lowpass_matrix",
    "resample_matrix",
    "resize",
    "upsample",
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
    """(n x n) ideal low-pass keeping |k| < cutoff n / 2 (`spectral.lowpass_mask_1d`)."""
    return _readonly(interpolation_matrix(n, np.arange(n), lowpass_mask_1d(n, cutoff, half=True,
                                                                           rule=rule)))


@functools.cache
def downsample_matrix(
    n: int, factor: int, rule: str = "strict", phase: int = 0, cutoff: float | None = None
) -> np.ndarray:
    """(ceil((n - phase) / factor) x n): ideal low-pass at `cutoff` (default 1/factor), then
    keep samples phase, phase + factor, ... (`filters.ideal_downsample`)."""
    factor = int(factor)
    if factor < 1 or not 0 <= phase < factor:
        raise ValueError(f"need factor >= 1 and 0 <= phase < factor, got {factor}, {phase}")
    cutoff = 1.0 / factor if cutoff is None else cutoff
    mask = lowpass_mask_1d(n, cutoff, half=True, rule=rule)
    return _readonly(interpolation_matrix(n, np.arange(phase, n, factor), mask))


@functools.cache
def upsample_matrix(n: int, factor: int = 2) -> np.ndarray:
    """(factor n x n) ideal upsampling (`filters.ideal_upsample`); input kept on every f-th row."""
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


# ----------------------------------------------------------------------------- products

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
      precision does not; the program as built here (one pass, bfloat16 operands,
      intermediates and fine-grid map) 1.0e-2 (`benchmarks/README.md`, "TPU numerics");
    - cost, TPU compiler (`python -m benchmarks.tpu_compile.mlp`: one AFC MLP at stage 1 of
      AFC-T, 32 images on one v5e chip, forward + backward): HIGHEST and HIGH 5.13 GB
      accessed, DEFAULT 3.87 GB (the split of float32 operands into bfloat16 parts is
      materialised), 3.51 GB with bfloat16 operands and intermediates (`_operand_dtype`),
      2.78 GB with the fine-grid map in bfloat16 too.
    Float32 compute keeps HIGHEST: DEFAULT there moves float32 AFC logits by ~5e-3 under shifts
    instead of ~2e-7.
    """
    if jnp.dtype(dtype).itemsize <= 2 and target_platform() == "tpu":
        return jax.lax.Precision.DEFAULT
    return HIGHEST


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
    ct = compute_dtype(x.dtype)
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




# ----------------------------------------------------------------------------- filters


def lowpass(x, cutoff, *, rule: str = "strict", layout: str = "nhwc"):
    """Ideal low-pass at (cutoff_h, cutoff_w): `lowpass_matrix` on both axes."""
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    ch, cw = cutoff
    return apply_separable(
        x, lowpass_matrix(h, float(ch), rule), lowpass_matrix(w, float(cw), rule), layout=layout
    )


def downsample(
    x, factor: int, *, phase=(0, 0), rule: str = "strict", cutoff: float, layout: str = "nhwc"
):
    """Ideal low-pass at `cutoff`, then keep every factor-th sample from `phase` (row, col)."""
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    py, px = phase
    return apply_separable(
        x,
        downsample_matrix(h, factor, rule, py, cutoff),
        downsample_matrix(w, factor, rule, px, cutoff),
        layout=layout,
    )


def upsample(x, factor: int, *, layout: str = "nhwc"):
    """Ideal upsampling by an integer factor: `upsample_matrix` on both axes."""
    ax_h, ax_w = spatial_axes(layout)
    h, w = x.shape[ax_h], x.shape[ax_w]
    return apply_separable(x, upsample_matrix(h, factor), upsample_matrix(w, factor), layout=layout)


def resize(x, out_hw, *, layout: str = "nhwc"):
    """Each axis to its output size: `resample_matrix` up, `band_resample_matrix` down."""
    ax_h, ax_w = spatial_axes(layout)
    mats = [
        resample_matrix(n, m) if m >= n else band_resample_matrix(n, m)
        for n, m in zip((x.shape[ax_h], x.shape[ax_w]), out_hw)
    ]
    return apply_separable(x, *mats, layout=layout)


def fine_grid_map(v, fn, grid, *, layout: str = "nhwc"):
    """`band_resample(fn(resample(v, grid)), (H, W))` by matrices, in the compute dtype.

    Returns the compute dtype; the products' precision follows v's dtype (`filter_precision`).

    NCHW: every product is a plain GEMM on the last axis and the map is transposed twice (W-first
    orientation on the fine grid, where fn does not care); fn sees the float32 accumulator and
    the operands and the fine map are `_operand_dtype` (bfloat16 for one-pass products).
    NHWC: `apply_separable`.
    """
    ax_h, ax_w = spatial_axes(layout)
    h, w = v.shape[ax_h], v.shape[ax_w]
    mh, mw = grid
    ct = compute_dtype(v.dtype)
    y = v.astype(ct)
    prec = filter_precision(v.dtype)
    if layout == "nchw":
        od = _operand_dtype(prec, ct)
        uh, uw = (jnp.asarray(resample_matrix(n, m), od) for n, m in ((h, mh), (w, mw)))
        dh, dw = (jnp.asarray(band_resample_matrix(m, n), od) for n, m in ((h, mh), (w, mw)))
        t = jnp.swapaxes(_rows_last(y.astype(od), uw, prec), -1, -2)  # (..., Mw, H)
        # The fine map leaves its product in the operand dtype: bfloat16 for one-pass products
        # (16-bit compute on a TPU) halves what is stored for the backward pass and read by fn.
        p = _rows_last(t, uh, prec, out=od)  # (..., Mw, Mh)
        q = fn(p).astype(od)
        t = jnp.swapaxes(_rows_last(q, dh, prec), -1, -2)  # (..., H, Mw)
        return _rows_last(t, dw, prec, out=ct)
    uh = jnp.asarray(resample_matrix(h, mh), ct)
    uw = jnp.asarray(resample_matrix(w, mw), ct)
    dh = jnp.asarray(band_resample_matrix(mh, h), ct)
    dw = jnp.asarray(band_resample_matrix(mw, w), ct)
    p = apply_separable(y, uh, uw, layout=layout, precision=prec)
    return apply_separable(fn(p), dh, dw, layout=layout, precision=prec)
