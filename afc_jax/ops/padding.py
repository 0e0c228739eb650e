"""Circular padding on NHWC arrays.

The official AFC models pad every convolution circularly with asymmetric amounts (spec §1).
`jnp.pad(mode="wrap")` refuses pads larger than the axis in some versions and does not express
"wrap more than once" clearly, so we gather with modular indices instead: any pad amount works,
including a 2x2 map padded by 3 on each side.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

PadPair = tuple[int, int]

_H_AXIS = -3
_W_AXIS = -2


def _check_pair(name: str, pair: Sequence[int]) -> PadPair:
    if len(pair) != 2:
        raise ValueError(f"{name} must be a (before, after) pair of ints, got {pair!r}")
    before, after = int(pair[0]), int(pair[1])
    if before < 0 or after < 0:
        raise ValueError(
            f"{name} amounts must be >= 0 (circular padding cannot crop), got {pair!r}"
        )
    return before, after


def wrap_indices(n: int, before: int, after: int) -> np.ndarray:
    """Indices into an axis of length `n` that realise a circular pad of (before, after)."""
    if n <= 0:
        raise ValueError(f"cannot circularly pad an empty axis (length {n})")
    return np.arange(-before, n + after) % n


def circular_pad_axis(x: jnp.ndarray, axis: int, before: int, after: int) -> jnp.ndarray:
    """Pads one axis circularly; `before`/`after` may exceed the axis length (wraps again)."""
    before, after = _check_pair("pad", (before, after))
    if before == 0 and after == 0:
        return x
    idx = wrap_indices(x.shape[axis], before, after)
    return jnp.take(x, idx, axis=axis)


def circular_pad(
    x: jnp.ndarray, pad_h: Sequence[int] = (0, 0), pad_w: Sequence[int] = (0, 0)
) -> jnp.ndarray:
    """Circularly pads the spatial axes of an NHWC array (any leading batch dims).

    Args:
      x: array of shape (..., H, W, C).
      pad_h: (before, after) rows to add above and below.
      pad_w: (before, after) columns to add left and right.

    Returns:
      (..., H + sum(pad_h), W + sum(pad_w), C); row `i` of the result is row
      `(i - pad_h[0]) mod H` of `x`.
    """
    if x.ndim < 3:
        raise ValueError(f"circular_pad expects (..., H, W, C), got shape {x.shape}")
    ph = _check_pair("pad_h", pad_h)
    pw = _check_pair("pad_w", pad_w)
    x = circular_pad_axis(x, _H_AXIS, *ph)
    return circular_pad_axis(x, _W_AXIS, *pw)
