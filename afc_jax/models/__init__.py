"""ConvNeXt families in Flax Linen: AFC, circular baseline, APS and the original.

model = models.create("convnext_afc_tiny", num_classes=1000)
logits = model.apply(variables, images)                     # images NHWC
dense = model.apply(variables, images, method="features")   # last stage, before pooling
"""

from afc_jax.models.convnext import TOTAL_STRIDE, ConvNeXt
from afc_jax.models.families import (
    CONVNEXT,
    CONVNEXT_AFC,
    CONVNEXT_APS,
    CONVNEXT_BASELINE_CIRCULAR,
    FAMILIES,
    SIZES,
    FamilySpec,
    TorchLayout,
)
from afc_jax.models.registry import available_models, create, parse_name

__all__ = [
    "CONVNEXT",
    "CONVNEXT_AFC",
    "CONVNEXT_APS",
    "CONVNEXT_BASELINE_CIRCULAR",
    "ConvNeXt",
    "FAMILIES",
    "FamilySpec",
    "SIZES",
    "TOTAL_STRIDE",
    "TorchLayout",
    "available_models",
    "create",
    "parse_name",
]
