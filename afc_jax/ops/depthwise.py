"""Depthwise convolution as a sum of shifted, per-channel-scaled copies (NHWC).

XLA:CPU lowers `conv_general_dilated` with `feature_group_count = C` to a slow generic loop,
and its backward even more so: on this project's 2-core CPU a 7x7 depthwise conv on
(8, 56, 56, 96) takes 0.20 s forward and 3.0 s forward + backward (to input and kernel).
Written as kh * kw shifted multiply-adds, XLA fuses the whole sum into one loop: 0.027 s
forward. The backward is written out (`jax.custom_vjp`): the input gradient is another fused
shift-and-add (the zero-padded cotangent with the flipped kernel), the kernel gradient kh * kw
multiply-reductions run one at a time: 0.26 s forward + backward with 46 MiB of temporaries
(autodiff of the sum: 0.90 s and 483 MiB, it holds kh * kw products at once). The function is
the same cross-correlation; only the summation order differs (float32 round-off, ~3e-7
relative). Forward-mode differentiation (jvp) is not defined for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["depthwise_conv_valid"]


def _shift_add(x, taps, h, w):
    """sum_{i,j} x[..., i:i+h, j:j+w, :] * taps[i, j]: x (N, H', W', C), taps (kh, kw, C)."""
    kh, kw = taps.shape[:2]
    out = None
    for i in range(kh):
        rows = x[..., i : i + h, :, :]
        for j in range(kw):
            term = rows[..., :, j : j + w, :] * taps[i, j]
            out = term if out is None else out + term
    return out


@jax.custom_vjp
def _depthwise(x, taps):
    h, w = x.shape[-3] - taps.shape[0] + 1, x.shape[-2] - taps.shape[1] + 1
    return _shift_add(x, taps, h, w)


def _depthwise_fwd(x, taps):
    return _depthwise(x, taps), (x, taps)


def _depthwise_bwd(res, g):
    # Autodiff of the shift-and-add would hold kh * kw products for the kernel gradient at
    # once (0.5 GiB at ConvNeXt-T's first stage). Written out: the input gradient is the full
    # correlation of g with the flipped kernel (one more fused shift-and-add), the kernel
    # gradient one multiply-reduction per tap, in a loop.
    x, taps = res
    kh, kw = taps.shape[:2]
    lead = ((0, 0),) * (g.ndim - 3)
    g_full = jnp.pad(g, lead + ((kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    dx = _shift_add(g_full, taps[::-1, ::-1], x.shape[-3], x.shape[-2])
    axes = tuple(range(g.ndim - 1))
    zeros = (0,) * (g.ndim - 3)

    def tap_grad(ij):
        # One tap at a time (a loop, not kh * kw products alive at once): one fused
        # multiply-reduce over the map each.
        window = jax.lax.dynamic_slice(x, zeros + (ij[0], ij[1], 0), g.shape)
        return jnp.sum(window * g, axis=axes)

    ii, jj = jnp.meshgrid(jnp.arange(kh), jnp.arange(kw), indexing="ij")
    dtaps = jax.lax.map(tap_grad, (ii.reshape(-1), jj.reshape(-1)))
    return dx, dtaps.reshape(taps.shape)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID, stride-1 depthwise cross-correlation by shift-and-add.

    Args:
      x: (N, H + kh - 1, W + kw - 1, C), already padded.
      kernel: (kh, kw, 1, C) (HWIO with one input channel per group, as for
        `jax.lax.conv_general_dilated(..., feature_group_count=C)`).

    Returns:
      (N, H, W, C) in the promoted dtype of x and kernel; low-precision inputs (bfloat16,
      float16) accumulate in float32 and are rounded once at the end.
    """
    kh, kw, one, c = kernel.shape
    if one != 1 or x.shape[-1] != c:
        raise ValueError(
            f"depthwise kernel must be (kh, kw, 1, C) with C = x's channels; got kernel "
            f"{kernel.shape} for x {x.shape}"
        )
    h, w = x.shape[-3] - kh + 1, x.shape[-2] - kw + 1
    if h < 1 or w < 1:
        raise ValueError(f"input {x.shape} is smaller than the kernel {kernel.shape[:2]}")
    out_dtype = jnp.result_type(x.dtype, kernel.dtype)
    acc_dtype = jnp.promote_types(out_dtype, jnp.float32)
    taps = kernel[:, :, 0, :].astype(acc_dtype)
    return _depthwise(x.astype(acc_dtype), taps).astype(out_dtype)
