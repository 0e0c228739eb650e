"""Circular padding (spec §1): wrap semantics, pads larger than the map, batch dims, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afc_jax import ops

SETTINGS = settings(max_examples=25, deadline=None)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@st.composite
def map_and_pads(draw, max_pad_factor=1):
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    c = draw(st.integers(1, 3))
    pads = [draw(st.integers(0, max_pad_factor * n)) for n in (h, h, w, w)]
    return (h, w, c), pads


@SETTINGS
@given(map_and_pads())
def test_equals_numpy_wrap_when_pad_fits(case):
    (h, w, c), (pt, pb, pl, pr) = case
    x = _rand((h, w, c))
    got = ops.circular_pad(jnp.asarray(x), (pt, pb), (pl, pr))
    want = np.pad(x, ((pt, pb), (pl, pr), (0, 0)), mode="wrap")
    chex.assert_shape(got, (h + pt + pb, w + pl + pr, c))
    np.testing.assert_array_equal(np.asarray(got), want)


@SETTINGS
@given(map_and_pads(max_pad_factor=3))
def test_modular_index_rule_for_any_pad(case):
    """Row i of the result is row (i - top) mod H of the input, for pads of any size."""
    (h, w, c), (pt, pb, pl, pr) = case
    x = _rand((h, w, c))
    got = np.asarray(ops.circular_pad(jnp.asarray(x), (pt, pb), (pl, pr)))
    rows = (np.arange(h + pt + pb) - pt) % h
    cols = (np.arange(w + pl + pr) - pl) % w
    np.testing.assert_array_equal(got, x[rows][:, cols])


def test_wraps_more_than_once():
    """A 2x2 map padded by 3 on every side (a 7x7 depthwise conv at 2x2)."""
    x = _rand((2, 2, 3))
    got = np.asarray(ops.circular_pad(jnp.asarray(x), (3, 3), (3, 3)))
    chex.assert_shape(got, (8, 8, 3))
    for i in range(8):
        for j in range(8):
            np.testing.assert_array_equal(got[i, j], x[(i - 3) % 2, (j - 3) % 2])


@pytest.mark.parametrize(
    "pad_h, pad_w",
    [((1, 2), (1, 2)), ((0, 1), (0, 1)), ((2, 0), (0, 3)), ((0, 0), (4, 1))],
    ids=["stem", "downsample", "top-right", "width-only"],
)
def test_asymmetric_amounts(pad_h, pad_w):
    x = _rand((5, 4, 2))
    got = np.asarray(ops.circular_pad(jnp.asarray(x), pad_h, pad_w))
    chex.assert_shape(got, (5 + sum(pad_h), 4 + sum(pad_w), 2))
    want = np.pad(x, (pad_h, pad_w, (0, 0)), mode="wrap")
    np.testing.assert_array_equal(got, want)
    # The first unpadded row/column is the original x[0, 0].
    np.testing.assert_array_equal(got[pad_h[0], pad_w[0]], x[0, 0])


def test_leading_batch_dims():
    x = _rand((2, 3, 4, 5, 2))
    got = np.asarray(ops.circular_pad(jnp.asarray(x), (1, 2), (3, 0)))
    chex.assert_shape(got, (2, 3, 7, 8, 2))
    want = np.pad(x, ((0, 0), (0, 0), (1, 2), (3, 0), (0, 0)), mode="wrap")
    np.testing.assert_array_equal(got, want)


def test_zero_pad_is_identity_and_jittable():
    x = jnp.asarray(_rand((3, 4, 2)))
    np.testing.assert_array_equal(np.asarray(ops.circular_pad(x)), np.asarray(x))
    fn = jax.jit(lambda a: ops.circular_pad(a, (1, 1), (2, 2)))
    np.testing.assert_array_equal(
        np.asarray(fn(x)), np.pad(np.asarray(x), ((1, 1), (2, 2), (0, 0)), mode="wrap")
    )


def test_single_axis_helper():
    x = jnp.asarray(_rand((3, 4, 2)))
    got = np.asarray(ops.circular_pad_axis(x, -3, 2, 4))
    np.testing.assert_array_equal(got, np.asarray(x)[(np.arange(9) - 2) % 3])


@pytest.mark.parametrize(
    "pad_h, pad_w", [((-1, 0), (0, 0)), ((0, 0), (0, -2)), ((1, 2, 3), (0, 0))]
)
def test_invalid_pads_raise(pad_h, pad_w):
    with pytest.raises(ValueError):
        ops.circular_pad(jnp.zeros((3, 3, 1)), pad_h, pad_w)


def test_rank_below_three_raises():
    with pytest.raises(ValueError):
        ops.circular_pad(jnp.zeros((3, 3)), (1, 1), (1, 1))
