"""Pure, jittable signal-processing functions on NHWC arrays (any leading batch dims).

Everything here is a plain function of arrays: the Flax layers in `afc_jax.layers` are thin
wrappers over these.
"""

from afc_jax.ops.fourier import (
    FILTER_RULES,
    fractional_shift,
    ideal_downsample,
    ideal_lowpass,
    ideal_upsample,
    integer_frequencies,
    lowpass_mask_1d,
    lowpass_mask_2d,
)
from afc_jax.ops.padding import circular_pad, circular_pad_axis
from afc_jax.ops.polyphase import adaptive_polyphase_sampling, polyphase_components
from afc_jax.ops.resampling import on_fine_grid, pointwise_on_upsampled

__all__ = [
    "FILTER_RULES",
    "adaptive_polyphase_sampling",
    "circular_pad",
    "circular_pad_axis",
    "fractional_shift",
    "ideal_downsample",
    "ideal_lowpass",
    "ideal_upsample",
    "integer_frequencies",
    "lowpass_mask_1d",
    "lowpass_mask_2d",
    "on_fine_grid",
    "pointwise_on_upsampled",
    "polyphase_components",
]
