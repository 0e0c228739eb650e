"""Thin Flax Linen modules over `afc_jax.ops` (NHWC)."""

from afc_jax.layers.activations import (
    DEFAULT_POLY_COEFFS,
    LowpassPolynomialActivation,
    PolynomialActivation,
    StemPolynomialResidual,
    gelu_exact,
)
from afc_jax.layers.conv import CircularConv
from afc_jax.layers.mlp import AliasFreeMLP, GeluMLP
from afc_jax.layers.mlp_variants import PolynomialMLP, UpsampledGeluMLP
from afc_jax.layers.norms import NORM_KINDS, LayerNorm
from afc_jax.layers.pooling import APSPool, BlurPool, IdealBlurPool, binomial_filter
from afc_jax.layers.regularization import DropPath, LayerScale

__all__ = [
    "APSPool",
    "AliasFreeMLP",
    "BlurPool",
    "CircularConv",
    "DEFAULT_POLY_COEFFS",
    "DropPath",
    "GeluMLP",
    "IdealBlurPool",
    "LayerNorm",
    "LayerScale",
    "LowpassPolynomialActivation",
    "NORM_KINDS",
    "PolynomialActivation",
    "PolynomialMLP",
    "StemPolynomialResidual",
    "UpsampledGeluMLP",
    "binomial_filter",
    "gelu_exact",
]
