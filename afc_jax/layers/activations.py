"""Polynomial activations of AFC (spec §5).

A degree-2 polynomial doubles the bandwidth of its input instead of spreading it over every
frequency like GELU, so evaluated on a 2x upsampled grid (see `afc_jax.layers.mlp`) it creates no
alias. Coefficients are per channel; the input and output scales are single trainable scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from afc_jax.ops.filters import ideal_lowpass

Dtype = Any

# (c0, c1, c2) used by the official code to initialise every channel.
DEFAULT_POLY_COEFFS = (0.0169394634313126, 0.5, 0.3078363963999393)
DEFAULT_SCALE = 7.0


def _coef_init(coeffs: Sequence[float]):
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.broadcast_to(jnp.asarray(coeffs, dtype), shape)

    return init


class _PolyBase(nn.Module):
    init_coeffs: Sequence[float] = DEFAULT_POLY_COEFFS
    in_scale_init: float = DEFAULT_SCALE
    out_scale_init: float = DEFAULT_SCALE
    train_scales: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def _params(self, channels: int):
        coef = self.param("coef", _coef_init(self.init_coeffs), (channels, 3), self.param_dtype)
        if self.train_scales:
            s_in = self.param(
                "in_scale", nn.initializers.constant(self.in_scale_init), (1,), self.param_dtype
            )
            s_out = self.param(
                "out_scale", nn.initializers.constant(self.out_scale_init), (1,), self.param_dtype
            )
        else:
            s_in = jnp.full((1,), self.in_scale_init, self.param_dtype)
            s_out = jnp.full((1,), self.out_scale_init, self.param_dtype)
        return coef, s_in, s_out


class PolynomialActivation(_PolyBase):
    """Per-channel quadratic `y = s_out * (c0 + c1 * xs + c2 * xs**2)`, `xs = s_in * x`.

    Params: `coef` (C, 3) holding (c0, c1, c2) per channel; `in_scale`, `out_scale` of shape (1,).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., C) -> (..., C)."""
        coef, s_in, s_out = self._params(x.shape[-1])
        x, coef, s_in, s_out = nn.dtypes.promote_dtype(x, coef, s_in, s_out, dtype=self.dtype)
        xs = s_in * x
        return s_out * (coef[:, 0] + xs * (coef[:, 1] + coef[:, 2] * xs))


class LowpassPolynomialActivation(_PolyBase):
    """Stem polynomial `y = s_out * (c0 + c1 * xs + c2 * xs * lowpass(xs, cutoff))`.

    Multiplying by a low-passed copy (band |k| < cutoff N / 2) instead of squaring keeps the
    product's aliases out of the band kept by the stem's subsequent stride-4 ideal filter.

    filter_impl: None (default: `ideal_lowpass` by FFT), "fft", "matrix" or "auto" (see
    `afc_jax.ops.filters.ideal_lowpass`); all agree to float32 round-off.
    """

    cutoff: float = 0.75
    filter_rule: str = "strict"
    filter_impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, x_lowpass: jax.Array | None = None) -> jax.Array:
        """x: (..., H, W, C) -> same shape.

        x_lowpass: `lowpass(x, cutoff)` (same shape) when the caller has it more cheaply, e.g.
        the AFC stem, which filters the 3-channel image before its circular conv (the two
        commute); None filters x here.
        """
        coef, s_in, s_out = self._params(x.shape[-1])
        if x_lowpass is not None and x_lowpass.shape != x.shape:
            raise ValueError(f"x_lowpass {x_lowpass.shape} must have x's shape {x.shape}")
        x, x_lowpass, coef, s_in, s_out = nn.dtypes.promote_dtype(
            x, x_lowpass, coef, s_in, s_out, dtype=self.dtype
        )
        xs = s_in * x
        if x_lowpass is not None:
            smooth = s_in * x_lowpass  # the low-pass is linear: lowpass(s_in x) = s_in lowpass(x)
        else:
            impl = "fft" if self.filter_impl is None else self.filter_impl
            smooth = ideal_lowpass(xs, self.cutoff, rule=self.filter_rule, impl=impl)
        return s_out * (coef[:, 0] + coef[:, 1] * xs + coef[:, 2] * xs * smooth)


class StemPolynomialResidual(nn.Module):
    """`x + gamma * LowpassPolynomialActivation(x)`, gamma a trainable scalar initialised to 0.

    `filter_impl` is passed to the activation (default None: today's `ideal_lowpass`), and so
    is `x_lowpass` (see `LowpassPolynomialActivation`).

    Params: `gamma` (1,) and the activation's under `act`.
    """

    cutoff: float = 0.75
    filter_rule: str = "strict"
    filter_impl: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, x_lowpass: jax.Array | None = None) -> jax.Array:
        """x: (..., H, W, C) -> same shape; x_lowpass: None or `lowpass(x, cutoff)`."""
        gamma = self.param("gamma", nn.initializers.zeros, (1,), self.param_dtype)
        y = LowpassPolynomialActivation(
            cutoff=self.cutoff,
            filter_rule=self.filter_rule,
            filter_impl=self.filter_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="act",
        )(x, x_lowpass)
        x, y, gamma = nn.dtypes.promote_dtype(x, y, gamma, dtype=self.dtype)
        return x + gamma * y


def gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the exact erf form (PyTorch's default `nn.GELU()`)."""
    return jax.nn.gelu(x, approximate=False)


__all__ = [
    "DEFAULT_POLY_COEFFS",
    "LowpassPolynomialActivation",
    "PolynomialActivation",
    "StemPolynomialResidual",
    "gelu_exact",
]
