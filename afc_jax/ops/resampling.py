"""Pointwise functions evaluated on a finer grid between ideal resampling (NHWC).

`on_fine_grid(x, fn, factor)` = `ideal_downsample(fn(ideal_upsample(x, factor)), factor)`: the
alias-free GAN treatment of a nonlinearity. Whatever `fn` adds above the fine grid's Nyquist
frequency still folds back, so it is alias-free only for band-limited `fn` (a polynomial of
degree <= factor); for GELU it reduces aliasing without removing it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from afc_jax.ops.filters import ideal_downsample, ideal_upsample
from afc_jax.ops.spectral import compute_dtype


def on_fine_grid(
    x: jax.Array,
    fn: Callable[[jax.Array], jax.Array],
    factor: int = 2,
    *,
    rule: str = "strict",
) -> jax.Array:
    """Evaluates the pointwise `fn` on the `factor`x ideally upsampled grid, then low-passes at
    the original band and samples back.

    Args:
      x: (..., H, W, C) array (the filters run in float32, or float64 for float64 input).
      fn: pointwise function (applied elementwise, any shape).
      factor: upsampling factor (integer >= 1; 1 is `fn(x)`).
      rule: low-pass rule of the downsampling (see `afc_jax.ops.filters.ideal_lowpass`).

    Returns:
      (..., H, W, C) array of x's dtype.
    """
    ct = compute_dtype(x.dtype)
    fine = ideal_upsample(x.astype(ct), factor)
    y = ideal_downsample(fn(fine), factor, rule=rule)
    return y.astype(x.dtype)


def pointwise_on_upsampled(
    x: jax.Array, fn: Callable[[jax.Array], jax.Array], factor: int
) -> jax.Array:
    """`fn` of the ideal `factor`x upsampling of x: (..., H, W, C) -> (..., fH, fW, C), float32.

    The map a nonlinearity would produce if evaluated on the finer grid, before any filter
    (what the aliasing spectrum measures, see `afc_jax.analysis.spectrum`).
    """
    ct = compute_dtype(x.dtype)
    return fn(ideal_upsample(jnp.asarray(x).astype(ct), factor))
