"""The shift-and-add depthwise conv equals XLA's grouped convolution (values and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax.ops.depthwise import depthwise_conv_valid
from tests.helpers import rel_err


def _grouped(x, k):
    return jax.lax.conv_general_dilated(
        x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1], precision=jax.lax.Precision.HIGHEST,
    )


@pytest.mark.parametrize("shape, ksize", [((2, 13, 11, 5), (7, 7)), ((1, 6, 9, 3), (3, 2))])
def test_equals_grouped_conv_with_gradients(shape, ksize):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    k = jnp.asarray(rng.standard_normal(ksize + (1, shape[-1])), jnp.float32)
    out = depthwise_conv_valid(x, k)
    assert out.shape == (shape[0], shape[1] - ksize[0] + 1, shape[2] - ksize[1] + 1, shape[3])
    assert rel_err(out, _grouped(x, k)) <= 1e-6
    r = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)

    def grads(f):
        return jax.grad(lambda x, k: jnp.sum(f(x, k) * r), argnums=(0, 1))(x, k)

    for got, want in zip(grads(depthwise_conv_valid), grads(_grouped), strict=True):
        assert rel_err(got, want) <= 1e-6


def test_bfloat16_accumulates_in_float32():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 10, 10, 4)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((7, 7, 1, 4)), jnp.float32)
    out = depthwise_conv_valid(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    want = depthwise_conv_valid(x.astype(jnp.bfloat16).astype(jnp.float32),
                                k.astype(jnp.bfloat16).astype(jnp.float32))
    assert rel_err(out, want) <= 4e-3  # one bfloat16 rounding of the float32 sum


def test_rejects_grouped_kernels_and_small_inputs():
    with pytest.raises(ValueError, match="depthwise kernel"):
        depthwise_conv_valid(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        depthwise_conv_valid(jnp.zeros((1, 5, 8, 4)), jnp.zeros((7, 7, 1, 4)))
