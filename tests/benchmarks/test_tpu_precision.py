"""The TPU-precision emulator (`benchmarks.tpu_precision`) rounds products as the TPU does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.tpu_precision import eval_emulated


def _matmul_jaxpr(precision):
    a = jnp.zeros((16, 32), jnp.float32)
    return jax.make_jaxpr(lambda a, b: jnp.matmul(a, b, precision=precision))(a, a.T)


def test_passes_match_bfloat16_splitting():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((16, 32)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((32, 16)), jnp.float32)
    exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    closed = _matmul_jaxpr(jax.lax.Precision.HIGHEST)  # a "dft" product (explicit precision)

    def err(passes):
        (out,) = eval_emulated(closed, [a, b], {"dft": passes, "pointwise": 0, "conv": 0})
        return np.max(np.abs(np.asarray(out, np.float64) - exact)) / np.max(np.abs(exact))

    one = np.asarray(a.astype(jnp.bfloat16), np.float64) @ np.asarray(b.astype(jnp.bfloat16),
                                                                     np.float64)  # fmt: skip
    (out1,) = eval_emulated(closed, [a, b], {"dft": 1, "pointwise": 0, "conv": 0})
    np.testing.assert_allclose(out1, one, rtol=1e-5, atol=1e-5)  # DEFAULT: rounded operands
    assert 1e-4 < err(1) < 3e-2  # bfloat16 operands: ~2^-9 relative
    assert err(3) < 1e-4 < err(1)  # HIGH: ~2^-16
    assert err(6) < 1e-6  # HIGHEST: float32 accuracy
    # A product without an explicit precision is a "pointwise" one: exact here.
    (plain,) = eval_emulated(_matmul_jaxpr(None), [a, b], {"dft": 1, "pointwise": 0, "conv": 0})
    assert np.max(np.abs(np.asarray(plain, np.float64) - exact)) < 1e-4


def test_products_inside_checkpoint_are_emulated_and_others_are_not_skipped():
    # On a TPU the AFC fine-grid maps run under jax.checkpoint: their products must be rounded
    # by the policy, not evaluated natively.
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((16, 32)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((32, 16)), jnp.float32)

    def product(a, b):
        return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)

    closed = jax.make_jaxpr(jax.checkpoint(product))(a, b)
    assert closed.jaxpr.eqns[0].primitive.name in ("remat2", "checkpoint")
    one_pass = np.asarray(a.astype(jnp.bfloat16), np.float64) @ np.asarray(
        b.astype(jnp.bfloat16), np.float64
    )
    (out,) = eval_emulated(closed, [a, b], {"dft": 1, "pointwise": 0, "conv": 0})
    np.testing.assert_allclose(out, one_pass, rtol=1e-5, atol=1e-5)
    # A loop body is not a call: evaluating it natively would escape the policy, so it is an
    # error rather than a silently exact product.
    looped = jax.make_jaxpr(
        lambda a, b: jax.lax.scan(lambda c, _: (product(c, b[:16]), None), a[:, :16], None, 2)[0]
    )(a, b)
    with pytest.raises(NotImplementedError, match="'scan'"):
        eval_emulated(looped, [a, b], {"dft": 1, "pointwise": 0, "conv": 0})
