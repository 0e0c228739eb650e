"""Band rules and the FFT implementation's own pieces (`afc_jax.ops.spectral`, spec §2).

The masks are checked against the documented rules built from exact fractions; the filters
themselves (every implementation) in `tests/ops/test_filters.py`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afc_jax.ops import filters, spectral
from tests.helpers import reference_mask_1d, rel_err, signed_frequencies

TOL = 1e-5
SETTINGS = settings(max_examples=20, deadline=None)
CUTOFFS = (Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(3, 4))
RULES = ("strict", "official")


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("n, cutoff", [(12, 0.75), (28, 0.75), (100, 0.25), (20, 0.25)])
def test_rules_differ_where_documented(n, cutoff):
    strict = spectral.lowpass_mask_1d(n, cutoff, rule="strict")
    official = spectral.lowpass_mask_1d(n, cutoff, rule="official")
    assert not np.array_equal(strict, official)
    # The official rule drops exactly the pair +-ceil(N c / 2) - 1 that the strict rule keeps.
    dropped = np.abs(signed_frequencies(n))[(strict == 1) & (official == 0)]
    assert sorted(set(dropped.tolist())) == [math.floor(n * cutoff / 2)]


def _model_usages(n_input: int):
    """(N, cutoff) pairs an AFC model filters at, for an n_input x n_input image (spec §6, §8)."""
    pairs = [(n_input, 0.75), (n_input, 0.25)]  # stem polynomial, stem stride-4 filter
    pairs += [(n_input // 2**j, 0.5) for j in (2, 3, 4)]  # downsample layers at N/4, N/8, N/16
    pairs += [(n_input // 2**j, 0.5) for j in (1, 2, 3, 4)]  # block MLPs on the 2x grid
    return pairs


@pytest.mark.parametrize("n_input", [32 * k for k in range(1, 17)])
def test_rules_agree_at_model_sizes(n_input):
    for n, cutoff in _model_usages(n_input):
        for half in (False, True):
            np.testing.assert_array_equal(
                spectral.lowpass_mask_1d(n, cutoff, half=half, rule="strict"),
                spectral.lowpass_mask_1d(n, cutoff, half=half, rule="official"),
                err_msg=f"N={n} cutoff={cutoff}",
            )
    # Cutoff 1/2 agrees at every coarser map (N/32 included) too.
    for j in range(6):
        n = n_input // 2**j
        np.testing.assert_array_equal(
            spectral.lowpass_mask_1d(n, 0.5, rule="strict"),
            spectral.lowpass_mask_1d(n, 0.5, rule="official"),
        )


def test_official_rule_can_remove_everything():
    """At N=4, cutoff 1/4 the official rule keeps no bin; the strict one keeps the mean."""
    assert spectral.lowpass_mask_1d(4, 0.25, rule="official").sum() == 0
    np.testing.assert_array_equal(spectral.lowpass_mask_1d(4, 0.25, rule="strict"), [1, 0, 0, 0])


@SETTINGS
@given(st.integers(1, 64), st.sampled_from(CUTOFFS), st.sampled_from(RULES))
def test_masks_match_documented_rules(n, cutoff, rule):
    full = spectral.lowpass_mask_1d(n, float(cutoff), rule=rule)
    np.testing.assert_array_equal(full, reference_mask_1d(n, cutoff, rule))
    half = spectral.lowpass_mask_1d(n, float(cutoff), half=True, rule=rule)
    np.testing.assert_array_equal(half, full[: n // 2 + 1])
    np.testing.assert_array_equal(
        spectral.lowpass_mask_2d(n, 6, float(cutoff), rule=rule),
        np.outer(full, reference_mask_1d(6, cutoff, rule)[:4]),
    )


def test_mask_examples_from_spec():
    """Spec §2 examples: cutoff -> (N, largest kept |k|)."""
    examples = {0.5: [(56, 13), (28, 6), (14, 3), (12, 2)], 0.25: [(224, 27), (96, 11)],
                0.75: [(224, 83), (96, 35), (56, 20), (14, 5)]}
    for cutoff, pairs in examples.items():
        for n, kmax in pairs:
            for rule in RULES:
                mask = spectral.lowpass_mask_1d(n, cutoff, rule=rule)
                kept = np.abs(signed_frequencies(n))[mask == 1]
                assert kept.max() == kmax, (cutoff, n, rule)


def test_invalid_rule_and_cutoff():
    with pytest.raises(ValueError):
        spectral.lowpass_mask_1d(8, 0.5, rule="nope")
    with pytest.raises(ValueError):
        spectral.lowpass_mask_1d(8, 0.0)


# ----------------------------------------------------------------------------- spectrum crop


def test_crop_is_downsample_only_where_the_band_is_a_crop():
    assert spectral.crop_is_downsample(224, 4, "strict", 0.25)
    assert spectral.crop_is_downsample(56, 2, "official", 0.5)
    assert not spectral.crop_is_downsample(7, 2, "strict", 0.5)  # not divisible
    assert not spectral.crop_is_downsample(56, 2, "strict", 0.75)  # band wider than the crop


def test_downsample_fft_crop_falls_back_where_the_crop_differs():
    """N = 100, stride 4, official rule drops the legitimate bins +-12: not a plain crop."""
    x = jnp.asarray(np.random.default_rng(4).standard_normal((1, 100, 20, 1)), jnp.float32)
    assert not spectral.crop_is_downsample(100, 4, "official", 0.25)
    want = filters.ideal_downsample(x, 4, rule="official")
    for impl in ("fft", "matrix"):
        got = filters.ideal_downsample(x, 4, rule="official", impl=impl, crop_spectrum=True)
        assert rel_err(got, want) <= TOL, impl


def test_layouts_and_their_spatial_axes():
    assert spectral.spatial_axes("nhwc") == (-3, -2)
    assert spectral.spatial_axes("nchw") == (-2, -1)
    with pytest.raises(ValueError, match="layout"):
        spectral.spatial_axes("hwcn")
    assert spectral.compute_dtype(jnp.bfloat16) == jnp.float32
    assert spectral.compute_dtype(jnp.float64) == jnp.float64
