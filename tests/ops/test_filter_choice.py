"""The "auto" rule (`afc_jax.ops.filter_choice`): which implementation and which layout, per
platform, on both sides of each documented threshold."""

from __future__ import annotations

import types

import pytest

from afc_jax.ops import filter_choice as fc
from afc_jax.ops.platform import targeting


def test_constants_have_one_meaning():
    assert fc.FILTER_IMPLS == ("auto", "fft", "matrix")
    assert fc.IMPLEMENTATIONS == ("fft", "matrix")
    assert fc.DENSE_COST_LIMIT == {"cpu": 512.0, "gpu": 256.0}
    assert fc.NCHW_MIN_SIZE == 20


def test_dense_costs_of_a_224_px_convnext():
    """The costs the module docstring quotes: 448, 70, <= 42, <= 93 (93.3 for the fast MLP
    at 56 px)."""
    assert fc.dense_cost(224, 224) == 448
    assert fc.dense_cost(224, 56) == 70
    assert max(fc.dense_cost(n, n // 2) for n in (56, 28, 14)) == 42
    ref = [fc.dense_cost(a, b) for n in (56, 28, 14, 7) for a, b in ((n, 2 * n), (2 * n, n))]
    fast = [fc.dense_cost(n, fc.fine_grid_size(n)) for n in (56, 28, 14, 7)]
    assert max(ref) == 84 and 93 < max(fast) < 94


@pytest.mark.parametrize(
    "op, below, above",
    [
        # largest size with cost <= limit on the CPU (512) / first size above it
        ("lowpass", 256, 257),  # cost 2n
        ("downsample2", 682, 683),  # cost m + m^2 / n with m = ceil(n / 2), ~3n/4
        ("downsample4", 1636, 1637),  # m = ceil(n / 4), ~5n/16
        ("mlp_reference", 341, 342),  # cost 3n/2 on the 2n grid
    ],
)
def test_cpu_threshold(op, below, above):
    assert fc.choose_filter_impl(op, below, platform="cpu") == "matrix"
    assert fc.choose_filter_impl(op, above, platform="cpu") == "fft"


def test_per_platform_choices_at_model_sizes():
    # cpu: every filter of a 224 px model by matrix; the full-size low-pass by FFT from 257 px.
    for op in ("lowpass", "downsample2", "downsample4", "mlp_fast", "mlp_reference"):
        assert fc.choose_filter_impl(op, 224, platform="cpu") == "matrix", op
    assert fc.choose_filter_impl("lowpass", 512, platform="cpu") == "fft"
    # gpu (limit 256): the 224x224 low-pass (cost 448) goes to the FFT, 128 px (256) does not.
    assert fc.choose_filter_impl("lowpass", 224, platform="gpu") == "fft"
    assert fc.choose_filter_impl("lowpass", 128, platform="gpu") == "matrix"
    assert fc.choose_filter_impl("lowpass", 129, platform="gpu") == "fft"
    for op in ("downsample4", "mlp_fast", "mlp_reference"):
        assert fc.choose_filter_impl(op, 56, platform="gpu") == "matrix", op
    # tpu: matrices whatever the size.
    for op in ("lowpass", "downsample2", "downsample4", "mlp_fast", "mlp_reference"):
        for size in (7, 224, 512, 4096):
            assert fc.choose_filter_impl(op, size, platform="tpu") == "matrix"
    # the platform defaults to the target platform
    with targeting("tpu"):
        assert fc.choose_filter_impl("lowpass", 512) == "matrix"
    with targeting("cpu"):
        assert fc.choose_filter_impl("lowpass", 512) == "fft"


def test_upsample_and_resize_ops():
    assert fc.choose_filter_impl("upsample2", 341, platform="cpu") == "matrix"  # cost 3n/2
    assert fc.choose_filter_impl("upsample2", 342, platform="cpu") == "fft"
    assert fc.choose_filter_impl("resize84", 56, platform="cpu") == "matrix"
    with pytest.raises(ValueError, match="unknown filter op"):
        fc.choose_filter_impl("blur", 56, platform="cpu")


def test_resolve_checks_the_name_and_resolves_auto():
    assert fc.resolve_filter_impl("fft", "lowpass", 7) == "fft"
    with targeting("cpu"):
        assert fc.resolve_filter_impl("auto", "lowpass", 224) == "matrix"
        assert fc.resolve_filter_impl("auto", "lowpass", 512) == "fft"
    with pytest.raises(ValueError, match="filter implementation"):
        fc.resolve_filter_impl("dct", "lowpass", 7)


def test_layout_rule():
    for platform in ("cpu", "gpu"):
        assert fc.choose_layout(19, "matrix", platform) == "nhwc"
        assert fc.choose_layout(20, "matrix", platform) == "nchw"
        # ConvNeXt-T's four stages: channels-first at 56 and 28 px, in place at 14 and 7
        assert [fc.choose_layout(n, "matrix", platform) for n in (56, 28, 14, 7)] == [
            "nchw", "nchw", "nhwc", "nhwc"
        ]
        assert fc.choose_layout(7, "fft", platform) == "nchw"
    for size in (7, 14, 19, 20, 28, 56):
        assert fc.choose_layout(size, "matrix", "tpu") == "nchw"


def test_downsample_layout_rule():
    assert fc.choose_downsample_layout("tpu") == "nchw"
    assert fc.choose_downsample_layout("cpu") == fc.choose_downsample_layout("gpu") == "nhwc"
    with targeting("tpu"):
        assert fc.choose_downsample_layout() == "nchw"


def test_fine_grid_remat_rule():
    assert fc.choose_fine_grid_remat("tpu") is True
    assert fc.choose_fine_grid_remat("cpu") is False and fc.choose_fine_grid_remat("gpu") is False
    for kind in ("TPU v5 lite", "TPU v6 lite"):
        assert fc.choose_fine_grid_remat("tpu", kind) is True
    assert fc.choose_fine_grid_remat("tpu", "TPU v5") is False  # v5p stores them
    with targeting("tpu"):  # a platform without devices: the kind is unknown
        assert fc.choose_fine_grid_remat() is True
    with targeting("cpu"):
        assert fc.choose_fine_grid_remat() is False
    v5e = types.SimpleNamespace(platform="tpu", device_kind="TPU v5 lite")
    v5p = types.SimpleNamespace(platform="tpu", device_kind="TPU v5")
    with targeting([v5e]):
        assert fc.choose_fine_grid_remat() is True
    with targeting([v5p]):
        assert fc.choose_fine_grid_remat() is False


def test_lowpass_before_conv_rule():
    assert fc.choose_lowpass_before_conv("cpu") is True
    assert fc.choose_lowpass_before_conv("gpu") is True
    assert fc.choose_lowpass_before_conv("tpu") is False
    with targeting("tpu"):
        assert fc.choose_lowpass_before_conv() is False
    with targeting("cpu"):
        assert fc.choose_lowpass_before_conv() is True
