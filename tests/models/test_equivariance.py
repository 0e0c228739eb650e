"""The AFC theorem, tested: shift equivariance of features and invariance of logits.

Shifts are circular, applied to the input with `ops.fractional_shift` (a Fourier phase ramp; for
integer amounts it equals `jnp.roll`). A shift of d input pixels is a shift of d/32 at the last
stage (total stride 32), so the dense feature map of AFC must equal the feature map of the
unshifted image shifted by d/32, fractional or not.

Tolerance: max|Δ| / max|ref| <= 1e-5 in float32. Every filter is an FFT round trip (error
~ eps * log2 N with eps = 1.2e-7) and a nano AFC applies ~25 of them, plus the sums of LayerNorm
and the head; we measure 1e-7..5e-7, so 1e-5 leaves a 20x margin, while models that alias
miss by 1e-2..1 (tested below as well, so the check can fail).
"""

from __future__ import annotations

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afc_jax import checkpoints, models, ops
from tests.helpers import random_variables
from tests.models.fixtures import io, nano_model, state_dict

EQUIVARIANCE_TOL = 1e-5
NOT_INVARIANT = 1e-3  # an aliasing model misses by far more than this
NANO = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10)
SHAPES = [(64, 64), (64, 96), (96, 32)]  # square and non-square (H, W)


def assert_rel_close(actual, reference, tol=EQUIVARIANCE_TOL):
    actual, reference = np.asarray(actual), np.asarray(reference)
    chex.assert_equal_shape([actual, reference])
    scale = float(np.max(np.abs(reference)))
    chex.assert_trees_all_close(actual, reference, atol=tol * scale, rtol=0.0)


def rel_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


class Harness:
    """A model with jitted logits/features of an input shifted by a traced (dy, dx).

    The shift is an argument, so every shift reuses one compilation per input shape.
    """

    def __init__(self, model, variables):
        self.model, self.variables = model, variables
        self._logits = jax.jit(
            lambda v, x, d: model.apply(v, ops.fractional_shift(x, (d[0], d[1])))
        )
        self._features = jax.jit(
            lambda v, x, d: model.apply(v, ops.fractional_shift(x, (d[0], d[1])), method="features")
        )

    def logits(self, x, shift=(0.0, 0.0)):
        return self._logits(self.variables, x, jnp.asarray(shift, jnp.float32))

    def features(self, x, shift=(0.0, 0.0)):
        return self._features(self.variables, x, jnp.asarray(shift, jnp.float32))


@functools.cache
def harness(family: str, shape: tuple[int, int]) -> Harness:
    model = models.create(family, **NANO)
    return Harness(model, random_variables(model, shape))


@functools.cache
def image(shape: tuple[int, int], batch=2, seed=7) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (batch,) + shape + (3,))


# --------------------------------------------------------------------------- AFC


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_afc_logits_invariant_on_fractional_grids(shape):
    h = harness("convnext_afc", shape)
    x = image(shape)
    ref = h.logits(x)
    grid = sorted(
        {(a / u, b / u) for u in (2, 3, 4) for a, b in itertools.product(range(u), repeat=2)}
    )
    worst = max(rel_diff(h.logits(x, s), ref) for s in grid)
    assert worst <= EQUIVARIANCE_TOL, f"worst relative logit change on 1/2,1/3,1/4 grids: {worst}"


@settings(max_examples=15, deadline=None)
@given(
    dy=st.floats(-40, 40, allow_nan=False, width=32),
    dx=st.floats(-40, 40, allow_nan=False, width=32),
)
def test_afc_logits_and_features_equivariant_to_random_real_shifts(dy, dx):
    shape = (64, 96)
    h = harness("convnext_afc", shape)
    x = image(shape)
    assert_rel_close(h.logits(x, (dy, dx)), h.logits(x))
    expected = ops.fractional_shift(h.features(x), (dy / 32, dx / 32))
    assert_rel_close(h.features(x, (dy, dx)), expected)


@settings(max_examples=10, deadline=None)
@given(dy=st.integers(-100, 100), dx=st.integers(-100, 100))
def test_afc_invariant_to_integer_rolls_of_any_amount(dy, dx):
    shape = (64, 64)
    h = harness("convnext_afc", shape)
    x = image(shape)
    rolled = jnp.roll(x, (dy, dx), axis=(1, 2))  # plain roll, no Fourier shift involved
    assert_rel_close(h.logits(rolled), h.logits(x))
    expected = ops.fractional_shift(h.features(x), (dy / 32, dx / 32))
    assert_rel_close(h.features(rolled), expected)


def test_afc_features_equivariant_at_each_shape_for_a_quarter_pixel():
    for shape in SHAPES:
        h = harness("convnext_afc", shape)
        x = image(shape)
        expected = ops.fractional_shift(h.features(x), (0.25 / 32, -0.75 / 32))
        assert_rel_close(h.features(x, (0.25, -0.75)), expected)


def test_afc_with_official_fixture_weights_is_invariant():
    model = nano_model("afc_nano")
    variables = checkpoints.from_torch_state_dict(state_dict("afc_nano"), model)
    h = Harness(model, variables)
    x, _ = io("afc_nano", "96x96")
    x = jnp.asarray(x)
    ref_logits, ref_features = h.logits(x), h.features(x)
    for shift in [(1, 0), (0, 5), (0.5, 0.5), (1 / 3, -2 / 3), (0.25, 0.75), (13.7, -2.2)]:
        assert_rel_close(h.logits(x, shift), ref_logits)
        expected = ops.fractional_shift(ref_features, (shift[0] / 32, shift[1] / 32))
        assert_rel_close(h.features(x, shift), expected)


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("family", ["convnext_baseline_circular", "convnext_aps"])
def test_invariant_to_multiples_of_the_total_stride(family):
    shape = (64, 96)
    h = harness(family, shape)
    x = image(shape)
    features = h.features(x)
    for k in [(1, 0), (0, 2), (-1, 1), (2, 3)]:
        rolled = jnp.roll(x, (32 * k[0], 32 * k[1]), axis=(1, 2))
        assert_rel_close(h.logits(rolled), h.logits(x))
        assert_rel_close(h.features(rolled), jnp.roll(features, k, axis=(1, 2)))


@settings(max_examples=10, deadline=None)
@given(dy=st.integers(-40, 40), dx=st.integers(-40, 40))
def test_aps_invariant_to_any_integer_shift(dy, dx):
    shape = (64, 64)
    h = harness("convnext_aps", shape)
    x = image(shape)
    assert_rel_close(h.logits(jnp.roll(x, (dy, dx), axis=(1, 2))), h.logits(x))


NEGATIVE_SEEDS = (7, 8, 9)
SUBPIXEL_SHIFTS = [(0.5, 0.5), (0.5, 0.0), (0.0, 1.5), (0.25, -0.75)]


@pytest.mark.parametrize("family", ["convnext_baseline_circular", "convnext_aps", "convnext"])
def test_aliasing_models_are_measurably_not_subpixel_invariant(family):
    """Sanity check that the invariance tests above can fail: every image and every sub-pixel
    shift moves an aliasing model's logits by far more than the tolerance."""
    shape = (64, 64)
    h = harness(family, shape)
    changes = {}
    for seed in NEGATIVE_SEEDS:
        x = image(shape, seed=seed)
        for shift in SUBPIXEL_SHIFTS:
            changes[(seed, shift)] = rel_diff(h.logits(x, shift), h.logits(x))
    smallest = min(changes, key=changes.get)
    assert changes[smallest] > NOT_INVARIANT, f"{family}: {smallest} changed by {changes[smallest]}"


def test_baseline_is_not_invariant_to_integer_shifts_below_the_stride():
    h = harness("convnext_baseline_circular", (64, 64))
    for seed in NEGATIVE_SEEDS:
        x = image((64, 64), seed=seed)
        for d in [(1, 0), (0, 3), (-5, 2), (16, 16)]:
            change = rel_diff(h.logits(jnp.roll(x, d, axis=(1, 2))), h.logits(x))
            assert change > NOT_INVARIANT, f"seed {seed}, roll {d}: changed by {change}"
