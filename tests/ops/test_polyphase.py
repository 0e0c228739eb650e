"""Polyphase components and adaptive polyphase sampling (APS, spec §8)."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afc_jax import ops

SETTINGS = settings(max_examples=20, deadline=None)
# Small shape pool (odd/even, non-square, batch dims) so each shape compiles once.
SHAPES = ((2, 8, 6, 3), (1, 7, 5, 2), (3, 4, 4, 1), (2, 2, 9, 7, 1))
ORDER = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (row phase, column phase) of components 0..3

_aps = jax.jit(ops.adaptive_polyphase_sampling, static_argnums=1)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pad_wrap_to_even(x, stride=2):
    h, w = x.shape[-3], x.shape[-2]
    pads = [(0, 0)] * (x.ndim - 3) + [(0, (-h) % stride), (0, (-w) % stride), (0, 0)]
    return np.pad(x, pads, mode="wrap")


def ref_aps(x, stride=2):
    """NumPy APS: the component of largest L2 norm per example, first on ties."""
    xp = _pad_wrap_to_even(np.asarray(x, np.float64), stride)
    comps = [xp[..., r::stride, c::stride, :] for c in range(stride) for r in range(stride)]
    norms = np.stack([np.sqrt(np.sum(cp**2, axis=(-3, -2, -1))) for cp in comps])
    index = np.argmax(norms, axis=0)
    out = np.stack(comps)  # (stride**2, ..., h, w, c)
    picked = np.take_along_axis(out, index[None, ..., None, None, None], axis=0)[0]
    return picked, index


def test_component_order():
    h, w = 4, 6
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = (10 * rows + cols).astype(np.float32)[None, :, :, None]
    comps = np.asarray(ops.polyphase_components(jnp.asarray(x), 2))
    chex.assert_shape(comps, (4, 1, 2, 3, 1))
    for i, (r, c) in enumerate(ORDER):
        np.testing.assert_array_equal(comps[i], x[:, r::2, c::2, :])
    # Component 1 is (odd row, even column): its first entry is x[1, 0] = 10.
    assert comps[1, 0, 0, 0, 0] == 10 and comps[2, 0, 0, 0, 0] == 1


@pytest.mark.parametrize("stride", [2, 3])
def test_odd_sizes_are_padded_circularly_at_the_end(stride):
    x = _rand((2, 5, 7, 2), 1)
    comps = np.asarray(ops.polyphase_components(jnp.asarray(x), stride))
    xp = _pad_wrap_to_even(x, stride)
    chex.assert_shape(comps, (stride**2, 2, -(-5 // stride), -(-7 // stride), 2))
    for i, (c, r) in enumerate(itertools.product(range(stride), range(stride))):
        np.testing.assert_array_equal(comps[i], xp[..., r::stride, c::stride, :])
    if stride == 2:
        # The last odd-row sample of a 5-row map wraps to row 0.
        np.testing.assert_array_equal(comps[1][:, -1], x[:, 0, 0::2][:, : comps.shape[3]])


@SETTINGS
@given(st.sampled_from(SHAPES), st.integers(0, 2**16))
def test_aps_matches_numpy_reference(shape, seed):
    x = _rand(shape, seed)
    y, index = _aps(jnp.asarray(x), 2)
    want, want_index = ref_aps(x)
    chex.assert_shape(y, want.shape)
    chex.assert_type(index, jnp.int32)
    chex.assert_shape(index, shape[:-3])
    np.testing.assert_array_equal(np.asarray(index), want_index)
    np.testing.assert_array_equal(np.asarray(y), want.astype(np.float32))


@SETTINGS
@given(st.sampled_from(((2, 8, 6, 3), (3, 4, 4, 1), (1, 6, 10, 2))), st.integers(0, 3),
       st.integers(0, 3), st.integers(0, 2**16))
def test_aps_is_equivariant_to_integer_shifts(shape, sy, sx, seed):
    """APS(roll(x, s)) == roll(APS(x), t) with t = floor((s + p) / 2) per axis, p the phase
    chosen for x: one of the two candidates floor(s / 2), floor((s + 1) / 2) (even sizes)."""
    x = _rand(shape, seed)
    y, index = (np.asarray(a) for a in _aps(jnp.asarray(x), 2))
    y_shift, _ = _aps(jnp.asarray(np.roll(x, (sy, sx), axis=(-3, -2))), 2)
    y_shift = np.asarray(y_shift)
    for b in range(shape[0]):
        p_row, p_col = ORDER[int(index[b])]
        candidates = list(itertools.product({sy // 2, (sy + 1) // 2}, {sx // 2, (sx + 1) // 2}))
        matches = [t for t in candidates
                   if np.array_equal(y_shift[b], np.roll(y[b], t, axis=(-3, -2)))]
        assert matches, f"example {b}: no coarse shift in {candidates} matches"
        assert ((sy + p_row) // 2, (sx + p_col) // 2) in matches


def test_ties_pick_the_first_component():
    const = jnp.ones((2, 4, 4, 1))
    y, index = ops.adaptive_polyphase_sampling(const, 2)
    np.testing.assert_array_equal(np.asarray(index), [0, 0])
    # Components 1 and 3 tie for the largest norm: 1 wins.
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1::2, :, 0] = 2.0  # odd rows: components 1 (even col) and 3 (odd col)
    y, index = ops.adaptive_polyphase_sampling(jnp.asarray(x), 2)
    assert int(index[0]) == 1
    np.testing.assert_array_equal(np.asarray(y), x[:, 1::2, 0::2])


def test_aps_selects_per_example_and_keeps_leading_dims():
    x = np.zeros((2, 3, 4, 4, 1), np.float32)
    for i, (r, c) in enumerate(ORDER[:3] + ORDER[3:] * 3):
        x.reshape(6, 4, 4, 1)[i, r::2, c::2] = 1.0 + i
    y, index = ops.adaptive_polyphase_sampling(jnp.asarray(x), 2)
    chex.assert_shape(y, (2, 3, 2, 2, 1))
    np.testing.assert_array_equal(np.asarray(index), [[0, 1, 2], [3, 3, 3]])


def test_aps_stride_three_and_errors():
    x = _rand((2, 7, 8, 1), 2)
    y, index = ops.adaptive_polyphase_sampling(jnp.asarray(x), 3)
    want, want_index = ref_aps(x, 3)
    chex.assert_shape(y, (2, 3, 3, 1))
    np.testing.assert_array_equal(np.asarray(index), want_index)
    np.testing.assert_array_equal(np.asarray(y), want.astype(np.float32))
    with pytest.raises(ValueError):
        ops.polyphase_components(jnp.zeros((4, 4)), 2)
    with pytest.raises(ValueError):
        ops.polyphase_components(jnp.zeros((4, 4, 1)), 0)


def test_aps_bfloat16_norms_in_float32():
    x = jnp.asarray(_rand((2, 6, 6, 2), 3), jnp.bfloat16)
    y, index = ops.adaptive_polyphase_sampling(x, 2)
    chex.assert_type(y, jnp.bfloat16)
    want, want_index = ref_aps(np.asarray(x.astype(jnp.float32)))
    np.testing.assert_array_equal(np.asarray(index), want_index)
    np.testing.assert_array_equal(np.asarray(y.astype(jnp.float32)), want)
