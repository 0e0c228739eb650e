"""The AFC theorem under chex variants: the same property jitted, eager, and sharded.

`tests/models/test_equivariance.py` tests the theorem in depth with one jitted harness; here
the property runs as `chex.variants` (with and without `jax.jit`) and with the batch sharded
over 8 simulated devices, trees are compared with `chex.assert_trees_all_close` at explicit
float32 tolerances, and `chex.assert_max_traces` proves that a traced shift reuses one
compilation per input shape.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from afc_jax import models, ops
from tests.helpers import random_variables

NANO = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10)
SHAPE = (64, 64)
TOL = 1e-5  # relative to the largest reference value (see test_equivariance.py)
SHIFTS = [(0.5, 0.5), (3.0, -7.0), (1 / 3, 0.25), (-12.75, 40.5)]


@functools.cache
def afc():
    model = models.create("convnext_afc", **NANO)
    return model, random_variables(model, SHAPE, seed=3)


def images(batch: int) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(11), (batch,) + SHAPE + (3,))


def shifted_outputs(model, variables, x, shift):
    """(logits, dense features) of `x` shifted circularly by `shift` = (dy, dx) pixels."""
    y = ops.fractional_shift(x, (shift[0], shift[1]))
    return model.apply(variables, y), model.apply(variables, y, method="features")


def assert_close(actual, reference, what: str):
    """max|actual - reference| <= TOL * max|reference|, leaf by leaf."""
    scale = max(float(jnp.max(jnp.abs(r))) for r in jax.tree_util.tree_leaves(reference))
    chex.assert_trees_all_equal_shapes(actual, reference)
    chex.assert_trees_all_close(actual, reference, atol=TOL * scale, rtol=0.0, custom_message=what)


def assert_equivariant(outputs_of, shifts=SHIFTS, batch=2):
    """Logits invariant and features shifted by d/32 for every shift in `shifts`."""
    x = images(batch)
    logits, features = outputs_of(x, jnp.zeros(2, jnp.float32))
    for shift in shifts:
        got_logits, got_features = outputs_of(x, jnp.asarray(shift, jnp.float32))
        expected = ops.fractional_shift(features, (shift[0] / 32, shift[1] / 32))
        assert_close(got_logits, logits, f"logits under shift {shift}")
        assert_close(got_features, expected, f"features under shift {shift}")


class AfcEquivarianceVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_logits_invariant_and_features_equivariant(self):
        model, variables = afc()

        @self.variant
        def outputs_of(x, shift):
            return shifted_outputs(model, variables, x, shift)

        # Eager execution dispatches every op: two shifts keep it to a few seconds.
        assert_equivariant(outputs_of, shifts=SHIFTS[:2])

    def test_one_compilation_serves_every_shift(self):
        model, variables = afc()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def outputs_of(x, shift):
            return shifted_outputs(model, variables, x, shift)

        assert_equivariant(outputs_of)  # five shifts (with zero), one trace

    def test_sharded_over_eight_devices(self):
        """The batch split over 8 devices ('data' axis), parameters replicated: the theorem
        holds and the sharded program computes what one device does."""
        devices = np.array(jax.devices()[:8])
        self.assertEqual(devices.size, 8, "conftest sets 8 simulated CPU devices")
        mesh = Mesh(devices, ("data",))
        model, variables = afc()
        batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        replicated = NamedSharding(mesh, PartitionSpec())
        sharded = jax.jit(
            functools.partial(shifted_outputs, model),
            in_shardings=(replicated, batch_sharding, replicated),
        )

        def outputs_of(x, shift):
            return sharded(variables, jax.device_put(x, batch_sharding), shift)

        assert_equivariant(outputs_of, shifts=SHIFTS[:2], batch=8)
        x, shift = images(8), jnp.asarray(SHIFTS[2], jnp.float32)
        one_device = jax.jit(functools.partial(shifted_outputs, model))(variables, x, shift)
        assert_close(outputs_of(x, shift), one_device, "sharded vs one device")
