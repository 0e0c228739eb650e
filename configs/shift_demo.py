"""Settings of the half-pixel shift demo (`examples/shift_photo.py`).

python examples/shift_photo.py --config configs/shift_demo.py --config.image_size=224
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Models compared, by registry name (see afc_jax.models.available_models()).
    config.models = ("convnext_afc_tiny", "convnext_baseline_circular_tiny")
    # Optional afc-jax checkpoints (e.g. converted official weights), keyed like `models`;
    # empty means random weights with every parameter moved off its initial value.
    config.checkpoints = ml_collections.ConfigDict({"afc": "", "baseline": ""})
    config.num_classes = 1000
    config.image_size = 128  # a multiple of 32
    config.photo = "astronaut"  # any colour image in skimage.data
    # (dy, dx) input shifts in pixels: circular, fractional ones by a Fourier phase ramp.
    config.shifts = ((0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (1.0, 0.0), (0.25, -0.75), (1 / 3, 2 / 3))
    config.seed = 0
    return config
