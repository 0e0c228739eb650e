"""afc-jax: Alias-Free ConvNets (Michaeli, Michaeli & Soudry, CVPR 2023) in JAX/Flax.

from afc_jax import models, checkpoints
model = models.create("convnext_afc_tiny", num_classes=1000)
"""

__version__ = "0.1.0"

from afc_jax import checkpoints, layers, models, ops  # noqa: E402

__all__ = ["checkpoints", "layers", "models", "ops", "__version__"]
