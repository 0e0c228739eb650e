"""Adaptive polyphase sampling (APS, Chaman & Dokmanic 2021) on NHWC arrays.

Subsampling by `stride` keeps one of stride**2 polyphase components. APS keeps, per example, the
component with the largest L2 norm over (H, W, C), so an integer shift of the input changes which
component wins instead of changing the output: the result is shift-equivariant up to an integer
shift of the coarse grid. Components are ordered column phase outer, row phase inner, which for
stride 2 is [(even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col)]
(spec §8); ties go to the first.
"""

from __future__ import annotations

import jax.numpy as jnp

from afc_jax.ops.padding import circular_pad


def _pad_to_multiple(x: jnp.ndarray, stride: int) -> jnp.ndarray:
    h, w = x.shape[-3], x.shape[-2]
    return circular_pad(x, (0, (-h) % stride), (0, (-w) % stride))


def polyphase_components(x: jnp.ndarray, stride: int = 2) -> jnp.ndarray:
    """All stride**2 polyphase components of an NHWC array, stacked on a new axis 0.

    Sizes that are not multiples of `stride` are first padded circularly at the end.

    Args:
      x: (..., H, W, C) array.
      stride: integer >= 1.

    Returns:
      (stride**2, ..., ceil(H/stride), ceil(W/stride), C), component index
      `col_phase * stride + row_phase`.
    """
    if x.ndim < 3:
        raise ValueError(f"polyphase_components expects (..., H, W, C), got shape {x.shape}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    x = _pad_to_multiple(x, stride)
    comps = [x[..., row::stride, col::stride, :] for col in range(stride) for row in range(stride)]
    return jnp.stack(comps, axis=0)


def adaptive_polyphase_sampling(x: jnp.ndarray, stride: int = 2) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Subsamples by `stride`, keeping the polyphase component of largest L2 norm per example.

    Args:
      x: (..., H, W, C) array; every leading index is an independent example.
      stride: integer >= 1.

    Returns:
      (y, index): y of shape (..., ceil(H/stride), ceil(W/stride), C) and the chosen component
      index per example, shape x.shape[:-3] (int32).
    """
    comps = polyphase_components(x, stride)
    # Norms in float32 at least, so bfloat16 rounding does not create spurious ties.
    c32 = comps.astype(jnp.promote_types(comps.dtype, jnp.float32))
    norms = jnp.sqrt(jnp.sum(c32 * c32, axis=(-3, -2, -1)))  # (stride**2, ...)
    index = jnp.argmax(norms, axis=0).astype(jnp.int32)  # first maximum wins ties
    gathered = jnp.take_along_axis(comps, index[None, ..., None, None, None], axis=0)
    return gathered[0], index
