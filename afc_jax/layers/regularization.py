"""Stochastic depth and layer scale."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class DropPath(nn.Module):
    """Stochastic depth: zero the whole residual branch of an example with probability `rate`.

    Survivors are scaled by 1/(1 - rate) so the expectation is unchanged. Uses the `dropout`
    RNG stream; identity when `deterministic` or `rate == 0`.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """x: (N, ...) -> same shape."""
        if deterministic or self.rate == 0.0:
            return x
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {self.rate}")
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class LayerScale(nn.Module):
    """Per-channel scale `gamma * x`, gamma of shape (C,) initialised to `init_value`."""

    init_value: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param(
            "gamma", nn.initializers.constant(self.init_value), (x.shape[-1],), self.param_dtype
        )
        x, gamma = nn.dtypes.promote_dtype(x, gamma, dtype=self.dtype)
        return x * gamma
