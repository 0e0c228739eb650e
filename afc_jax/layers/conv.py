"""Convolutions with circular padding (spec §1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from afc_jax.ops.depthwise import depthwise_conv_valid
from afc_jax.ops.padding import circular_pad
from afc_jax.ops.platform import normalize_platform, target_platform

Dtype = Any
Initializer = Callable[..., jax.Array]

# ConvNeXt initialises conv and linear weights with a truncated normal of std 0.02.
convnext_kernel_init = nn.initializers.truncated_normal(stddev=0.02)


DEPTHWISE_IMPLS = ("auto", "shift_add", "conv")


def resolve_depthwise_impl(impl: str, backend: str | None = None) -> str:
    """"auto" -> "shift_add" on CPU, "conv" on GPU/TPU (their grouped convolutions are native
    kernels; the shift-and-add's unrolled taps only pay off on XLA:CPU).

    The platform is `backend`, else the target platform (`afc_jax.ops.platform`), so a TPU
    program compiled on a CPU host gets the TPU's choice. Measured with the TPU compiler
    (issue 12, ConvNeXt baseline-T train step at 32 images per chip on v5e:2x2, bfloat16): the
    shift-and-add moves 88 GB per step and chip, the native grouped conv 39 GB.
    """
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise_impl must be one of {DEPTHWISE_IMPLS}, got {impl!r}")
    if impl == "auto":
        platform = normalize_platform(backend) if backend else target_platform()
        return "shift_add" if platform == "cpu" else "conv"
    return impl


class CircularConv(nn.Module):
    """`circular pad -> convolution (VALID, stride 1 unless told)` on NHWC inputs.

    The pad is asymmetric and may exceed the map size (it wraps again), so e.g. a 7x7
    depthwise conv works on a 2x2 map.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      padding: ((top, bottom), (left, right)) circular pad amounts.
      strides: convolution strides (1 in every AFC-family layer).
      feature_group_count: C for a depthwise convolution.
      padding_mode: "circular" or "zeros" (the original ConvNeXt's depthwise conv).
      depthwise_impl: how a stride-1 depthwise conv (C in = C out = groups) runs, with the
        same parameters and function (float32 round-off apart): "shift_add" (a fused sum of
        shifted copies, `afc_jax.ops.depthwise`: XLA:CPU's grouped convolution is 4-20x slower
        forward and backward), "conv" (XLA's grouped convolution, which GPUs and TPUs run
        natively) or "auto" (shift_add on CPU, conv elsewhere).
    """

    features: int
    kernel_size: Sequence[int]
    padding: Sequence[Sequence[int]] = ((0, 0), (0, 0))
    strides: Sequence[int] = (1, 1)
    feature_group_count: int = 1
    padding_mode: str = "circular"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    kernel_init: Initializer = convnext_kernel_init
    bias_init: Initializer = nn.initializers.zeros
    depthwise_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C_in) -> (N, H', W', features)."""
        in_features = x.shape[-1]
        impl = resolve_depthwise_impl(self.depthwise_impl)
        if in_features % self.feature_group_count:
            raise ValueError(
                f"{self.name}: {in_features} input channels are not divisible by "
                f"feature_group_count={self.feature_group_count}"
            )
        kh, kw = self.kernel_size
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (kh, kw, in_features // self.feature_group_count, self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        (pt, pb), (pl, pr) = self.padding
        if self.padding_mode == "circular":
            x = circular_pad(x, (pt, pb), (pl, pr))
            pad = "VALID"
        elif self.padding_mode == "zeros":
            pad = ((pt, pb), (pl, pr))
        else:
            raise ValueError(
                f"padding_mode must be 'circular' or 'zeros', got {self.padding_mode!r}"
            )
        depthwise = (
            self.feature_group_count == in_features == self.features
            and tuple(self.strides) == (1, 1)
        )
        if depthwise and impl == "shift_add":
            if pad != "VALID":
                x = jnp.pad(x, ((0, 0),) * (x.ndim - 3) + (pad[0], pad[1], (0, 0)))
            y = depthwise_conv_valid(x, kernel)
            return y if bias is None else y + bias
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=tuple(self.strides),
            padding=pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.feature_group_count,
            precision=self.precision,
        )
        if bias is not None:
            y = y + bias
        return y
