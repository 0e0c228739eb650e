"""Pure, jittable signal-processing functions on NHWC arrays (any leading batch dims).

Everything here is a plain function of arrays: the Flax layers in `afc_jax.layers` are thin
wrappers over these. The ideal filters are `afc_jax.ops.filters` (implementations in
`spectral` and `filter_matrices`, "auto" choices in `filter_choice`).
"""

from afc_jax.ops.filters import (
    FILTER_IMPLS,
    FILTER_RULES,
    LAYOUTS,
    fine_grid_map,
    fine_grid_size,
    fractional_shift,
    ideal_downsample,
    ideal_lowpass,
    ideal_resize,
    ideal_upsample,
)
from afc_jax.ops.padding import circular_pad, circular_pad_axis
from afc_jax.ops.polyphase import adaptive_polyphase_sampling, polyphase_components
from afc_jax.ops.resampling import on_fine_grid, pointwise_on_upsampled
from afc_jax.ops.spectral import integer_frequencies, lowpass_mask_1d, lowpass_mask_2d

__all__ = [
    "FILTER_IMPLS",
    "FILTER_RULES",
    "LAYOUTS",
    "adaptive_polyphase_sampling",
    "circular_pad",
    "circular_pad_axis",
    "fine_grid_map",
    "fine_grid_size",
    "fractional_shift",
    "ideal_downsample",
    "ideal_lowpass",
    "ideal_resize",
    "ideal_upsample",
    "integer_frequencies",
    "lowpass_mask_1d",
    "lowpass_mask_2d",
    "on_fine_grid",
    "pointwise_on_upsampled",
    "polyphase_components",
]
