"""Inverted-bottleneck MLPs of ConvNeXt blocks (pointwise C -> 4C -> C) on NHWC inputs."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from afc_jax.layers.activations import PolynomialActivation, gelu_exact
from afc_jax.layers.conv import convnext_kernel_init
from afc_jax.ops.fourier import ideal_downsample, ideal_upsample

Dtype = Any


class _PointwiseMLP(nn.Module):
    expansion: int = 4
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def _dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(
            features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=convnext_kernel_init,
            name=name,
        )


class GeluMLP(_PointwiseMLP):
    """`pwconv2(gelu(pwconv1(x)))` at the input resolution (ConvNeXt, baseline, APS)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., C) -> (..., C)."""
        c = x.shape[-1]
        x = self._dense(self.expansion * c, "pwconv1")(x)
        x = gelu_exact(x)
        return self._dense(c, "pwconv2")(x)


class AliasFreeMLP(_PointwiseMLP):
    """AFC block MLP (spec §6), the reference formulation.

    `upsample 2x -> pwconv1 (C -> 4C) -> per-channel quadratic -> pwconv2 (4C -> C)
    -> ideal low-pass at 1/2 -> keep the even samples`. The quadratic doubles the band of its
    input, which on the 2x grid still fits below Nyquist, so nothing aliases.

    Params: `pwconv1`, `act` (see `PolynomialActivation`), `pwconv2`.
    """

    filter_rule: str = "strict"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        c = x.shape[-1]
        y = ideal_upsample(x, 2)
        y = self._dense(self.expansion * c, "pwconv1")(y)
        y = PolynomialActivation(dtype=self.dtype, param_dtype=self.param_dtype, name="act")(y)
        y = self._dense(c, "pwconv2")(y)
        return ideal_downsample(y, 2, rule=self.filter_rule)
