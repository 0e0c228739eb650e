"""Pure, jittable signal-processing functions on NHWC arrays (any leading batch dims).

Everything here is a plain function of arrays: the Flax layers in `afc_jax.layers` are thin
wrappers over these. The ideal filters are `afc_jax.ops.filters` (implementations in
`spectral` and `filter_matrices`, "auto" choices in `filter_choice`).
"""

from afc_jax.ops import filters
from afc_jax.ops.filters import *  # noqa: F403  (the filter API, listed in filters.__all__)
from afc_jax.ops.padding import circular_pad, circular_pad_axis
from afc_jax.ops.polyphase import adaptive_polyphase_sampling, polyphase_components
from afc_jax.ops.resampling import on_fine_grid, pointwise_on_upsampled
from afc_jax.ops.spectral import integer_frequencies, lowpass_mask_1d, lowpass_mask_2d

__all__ = filters.__all__ + [
    "adaptive_polyphase_sampling",
    "circular_pad",
    "circular_pad_axis",
    "integer_frequencies",
    "lowpass_mask_1d",
    "lowpass_mask_2d",
    "on_fine_grid",
    "pointwise_on_upsampled",
    "polyphase_components",
]
