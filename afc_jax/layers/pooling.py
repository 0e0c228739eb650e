"""Downsampling layers: ideal BlurPool, plain (binomial) BlurPool and APS, on NHWC inputs."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.ops.filters import ideal_downsample
from afc_jax.ops.padding import circular_pad
from afc_jax.ops.polyphase import adaptive_polyphase_sampling


class IdealBlurPool(nn.Module):
    """Ideal low-pass (cutoff 1/stride of Nyquist unless given) then keep every stride-th sample.

    filter_impl: None (default: full-size FFT round trip and a strided slice), "fft" (spectrum
    crop to the output size where that is the same map), "matrix" (separable dense matrices)
    or "auto" (per layer, `afc_jax.ops.filter_choice`); see `afc_jax.ops.filters
    .ideal_downsample`. All agree to float32 round-off.
    """

    stride: int = 2
    cutoff: float | None = None
    filter_rule: str = "strict"
    filter_impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C) -> (N, ceil(H/stride), ceil(W/stride), C)."""
        if self.filter_impl is not None:
            return ideal_downsample(
                x, self.stride, rule=self.filter_rule, cutoff=self.cutoff,
                impl=self.filter_impl, crop_spectrum=True,
            )
        cutoff = self.cutoff
        if cutoff is not None and math.isclose(cutoff, 1.0 / self.stride):
            cutoff = None  # exactly 1/stride
        return ideal_downsample(x, self.stride, rule=self.filter_rule, cutoff=cutoff)


def binomial_filter(size: int) -> np.ndarray:
    """Normalised 2D binomial blur kernel of the given size (size 1 is the identity)."""
    row = np.array([math.comb(size - 1, k) for k in range(size)], dtype=np.float64)
    kernel = np.outer(row, row)
    return kernel / kernel.sum()


class BlurPool(nn.Module):
    """Anti-aliased downsampling with a fixed binomial blur (Zhang, 2019), circular padding.

    `filter_size=1` is plain subsampling (`x[::stride, ::stride]`), which is what the circular
    baseline uses. Larger sizes pad (size-1)//2 before and ceil((size-1)/2) after, then blur
    depthwise with the normalised binomial kernel at the given stride.
    """

    stride: int = 2
    filter_size: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C) -> (N, ceil(H/stride), ceil(W/stride), C)."""
        if self.filter_size == 1:
            return x[..., :: self.stride, :: self.stride, :]
        before = (self.filter_size - 1) // 2
        after = self.filter_size - 1 - before
        xp = circular_pad(x, (before, after), (before, after))
        c = x.shape[-1]
        kernel = np.tile(binomial_filter(self.filter_size)[:, :, None, None], (1, 1, 1, c))
        return jax.lax.conv_general_dilated(
            xp,
            jnp.asarray(kernel, xp.dtype),
            window_strides=(self.stride, self.stride),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
        )


class APSPool(nn.Module):
    """Adaptive polyphase sampling by `stride` (see `afc_jax.ops.polyphase`).

    The chosen component index is sown into the `intermediates` collection as `polyphase_index`.
    """

    stride: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y, index = adaptive_polyphase_sampling(x, self.stride)
        self.sow("intermediates", "polyphase_index", index)
        return y
