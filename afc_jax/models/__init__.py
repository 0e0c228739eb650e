"""ConvNeXt families in Flax Linen: AFC, circular baseline, APS and the original.

model = models.create("convnext_afc_tiny", num_classes=1000)
logits = model.apply(variables, images)                     # images NHWC
dense = model.apply(variables, images, method="features")   # last stage, before pooling
model = models.from_config(config.model, num_classes=10)    # a config's `model` section
"""

from afc_jax.models.config import DTYPES, ModelConfigError, from_config
from afc_jax.models.convnext import TOTAL_STRIDE, ConvNeXt
from afc_jax.models.families import (
    CONVNEXT,
    CONVNEXT_AFC,
    CONVNEXT_APS,
    CONVNEXT_BASELINE_CIRCULAR,
    FAMILIES,
    SIZES,
    FamilySpec,
)
from afc_jax.models.registry import available_models, create, parse_name

__all__ = [
    "CONVNEXT",
    "CONVNEXT_AFC",
    "CONVNEXT_APS",
    "CONVNEXT_BASELINE_CIRCULAR",
    "ConvNeXt",
    "DTYPES",
    "FAMILIES",
    "FamilySpec",
    "ModelConfigError",
    "SIZES",
    "TOTAL_STRIDE",
    "available_models",
    "create",
    "from_config",
    "parse_name",
]
