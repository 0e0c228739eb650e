"""LayerNorms of the ConvNeXt families (spec §7), on NHWC inputs, eps 1e-6.

- "C": mean and biased variance over channels, per pixel (ConvNeXt's LayerNorm).
- "CHW2": alias-free LayerNorm. The mean is still per pixel over channels (a pointwise linear
  map, so it commutes with shifts), but the variance is one scalar per example: the mean over
  C, H and W of the centred squares. A per-pixel variance would be a pointwise nonlinearity that
  aliases; a global one is shift invariant (Parseval).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
NORM_KINDS = ("C", "CHW2")


class LayerNorm(nn.Module):
    """Channel LayerNorm ("C") or alias-free LayerNorm ("CHW2") with per-channel affine.

    Statistics are computed in float32 even under bfloat16 compute.

    Attributes:
      kind: "C" or "CHW2".
      epsilon: added to the variance.
    """

    kind: str = "C"
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., H, W, C) for "CHW2" (or (..., C) for "C") -> same shape."""
        if self.kind not in NORM_KINDS:
            raise ValueError(f"LayerNorm kind must be one of {NORM_KINDS}, got {self.kind!r}")
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        out_dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        if self.kind == "C":
            var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        else:
            if x.ndim < 3:
                raise ValueError(f"CHW2 LayerNorm expects (..., H, W, C), got shape {x.shape}")
            var = jnp.mean(jnp.square(centred), axis=(-3, -2, -1), keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.epsilon)
        y = y * scale.astype(y.dtype) + bias.astype(y.dtype)
        return y.astype(out_dtype)
