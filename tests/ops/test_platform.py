""" "auto" choices follow the target platform (`afc_jax.ops.platform`), not the host's backend."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import pytest

from afc_jax.layers.conv import resolve_depthwise_impl
from afc_jax.ops import filter_matrices as fm
from afc_jax.ops.filter_choice import choose_filter_impl, choose_layout
from afc_jax.ops.filters import fine_grid_map
from afc_jax.ops.platform import (
    normalize_platform,
    target_device_kind,
    target_platform,
    targeting,
)


def test_default_is_the_process_backend_and_targeting_overrides_it_within_the_block():
    host = normalize_platform(jax.default_backend())
    assert target_platform() == host
    with targeting("tpu"):
        assert target_platform() == "tpu"
        with targeting("cuda"):
            assert target_platform() == "gpu"
        assert target_platform() == "tpu"
    assert target_platform() == host


def test_targeting_accepts_devices():
    with targeting(jax.devices()):
        assert target_platform() == jax.devices()[0].platform


def test_target_device_kind_comes_with_devices_only():
    host = jax.devices()[0].device_kind
    assert target_device_kind() == host  # outside any block: the default backend's
    v5p = types.SimpleNamespace(platform="tpu", device_kind="TPU v5")
    with targeting([v5p]):
        assert (target_platform(), target_device_kind()) == ("tpu", "TPU v5")
        with targeting("tpu"):  # a bare platform name says nothing of the chips
            assert target_device_kind() is None
        assert target_device_kind() == "TPU v5"
    assert target_device_kind() == host


def test_auto_choices_decide_for_the_target():
    # The CPU's choices (shift-and-add, FFT for a large low-pass) must not reach a TPU program.
    assert resolve_depthwise_impl("auto", backend="cpu") == "shift_add"
    assert choose_filter_impl("lowpass", 512, platform="cpu") == "fft"
    with targeting("tpu"):
        assert resolve_depthwise_impl("auto") == "conv"
        assert choose_filter_impl("lowpass", 512) == "matrix"
    with targeting("cpu"):
        assert resolve_depthwise_impl("auto") == "shift_add"
        assert choose_filter_impl("lowpass", 512) == "fft"


def test_tpu_layout_and_filter_precision():
    # TPU compiler measurements (afc_jax.ops.filter_choice, filter_matrices): NCHW at every
    # size; one bfloat16 pass for the filter products under 16-bit compute; elsewhere HIGHEST.
    assert choose_layout(14, platform="cpu") == "nhwc"
    assert choose_layout(14, platform="tpu") == "nchw"
    highest, default = jax.lax.Precision.HIGHEST, jax.lax.Precision.DEFAULT
    with targeting("tpu"):
        assert choose_layout(14) == "nchw"
        assert fm.filter_precision(jnp.bfloat16) == default
        assert fm.filter_precision(jnp.float32) == highest
    for platform in ("cpu", "gpu"):
        with targeting(platform):
            assert fm.filter_precision(jnp.bfloat16) == highest


def test_one_pass_filters_on_a_tpu_take_bfloat16_operands_and_stay_accurate():
    # Under 16-bit compute on a TPU the filter products get bfloat16 operands (what one
    # DEFAULT pass rounds them to anyway) and float32 accumulators: bfloat16-level accuracy.
    import numpy as np

    x = np.random.default_rng(0).standard_normal((2, 4, 12, 12)).astype(np.float32)
    ref = fine_grid_map(jnp.asarray(x), lambda p: p * p, layout="nchw")
    sep = fm.apply_separable(jnp.asarray(x), fm.upsample_matrix(12, 2), None, layout="nchw")
    with targeting("tpu"):
        lowp = fine_grid_map(jnp.asarray(x, jnp.bfloat16), lambda p: p * p, layout="nchw")
        lows = fm.apply_separable(
            jnp.asarray(x, jnp.bfloat16), fm.upsample_matrix(12, 2), None, layout="nchw"
        )
        text = (
            jax.jit(lambda v: fine_grid_map(v, lambda p: p * p, layout="nchw"))
            .lower(jnp.asarray(x, jnp.bfloat16))
            .as_text()
        )
    assert lowp.dtype == lows.dtype == jnp.bfloat16
    for low, high in ((lowp, ref), (lows, sep)):
        err = np.max(np.abs(np.asarray(low, np.float32) - high)) / np.max(np.abs(high))
        assert err < 3e-2, err
    assert "bf16" in text and "f32" in text  # bfloat16 operands, float32 accumulators


def test_unknown_platform_is_an_error():
    with pytest.raises(ValueError, match="unknown target platform"):
        with targeting("ipu"):
            pass
