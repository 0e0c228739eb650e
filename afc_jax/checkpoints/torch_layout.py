"""Where the official PyTorch models keep each parameter: state-dict key prefixes per family.

The network is written once (`afc_jax.models`); only the official code's module nesting
differs between families, and that belongs here, with the import and export of state dicts.
A family added to `afc_jax.models.families` that should load official checkpoints gets one
entry in `LAYOUTS` (an ablation rung usually reuses its base family's layout).
"""

from __future__ import annotations

import dataclasses

from afc_jax.models.families import FamilySpec


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """Official state-dict key prefixes; `{i}` is the stage, `{j}` the block."""

    stem_conv: str
    stem_norm: str
    downsample_norm: str
    downsample_conv: str
    block_dwconv: str
    block_prefix: str  # prefix of pwconv1/act/pwconv2 inside a block
    stem_poly: str | None = None


_CIRCULAR = dict(
    stem_conv="downsample_layers.0.0.1",
    downsample_norm="downsample_layers.{i}.0",
    downsample_conv="downsample_layers.{i}.1.1",
    block_dwconv="stages.{i}.{j}.dwconv.1",
)
# The stem is a Sequential: conv, [polynomial], resampling module(s), norm.
AFC = TorchLayout(
    **_CIRCULAR,
    stem_poly="downsample_layers.0.1",
    stem_norm="downsample_layers.0.3",
    block_prefix="stages.{i}.{j}.mlp.",
)
AFC_WITHOUT_STEM_POLYNOMIAL = dataclasses.replace(
    AFC, stem_poly=None, stem_norm="downsample_layers.0.2"
)
BASELINE_CIRCULAR = TorchLayout(
    **_CIRCULAR, stem_norm="downsample_layers.0.2", block_prefix="stages.{i}.{j}.mlp."
)
APS = TorchLayout(**_CIRCULAR, stem_norm="downsample_layers.0.3", block_prefix="stages.{i}.{j}.")
CONVNEXT = TorchLayout(
    stem_conv="downsample_layers.0.0",
    stem_norm="downsample_layers.0.1",
    downsample_norm="downsample_layers.{i}.0",
    downsample_conv="downsample_layers.{i}.1",
    block_dwconv="stages.{i}.{j}.dwconv",
    block_prefix="stages.{i}.{j}.",
)

LAYOUTS: dict[str, TorchLayout] = {
    "convnext_afc": AFC,
    "convnext_baseline_circular": BASELINE_CIRCULAR,
    "convnext_aps": APS,
    "convnext": CONVNEXT,
    # The ablation ladder (spec §11): the official rungs keep their base family's nesting.
    "convnext_blurpool": BASELINE_CIRCULAR,
    "convnext_ideal_lpf": BASELINE_CIRCULAR,
    "convnext_ideal_lpf_afln": BASELINE_CIRCULAR,
    "convnext_afc_poly1x": AFC,
    "convnext_afc_nostem": AFC_WITHOUT_STEM_POLYNOMIAL,
    "convnext_afc_ln_c": AFC,
    "convnext_afc_upgelu": AFC,
}


def layout_of(family: FamilySpec) -> TorchLayout:
    """The official key layout of `family`; a clear error for a family without one."""
    layout = LAYOUTS.get(family.name)
    if layout is None:
        raise KeyError(
            f"no PyTorch state-dict layout for family {family.name!r}: add one to LAYOUTS in "
            "afc_jax/checkpoints/torch_layout.py"
        )
    if family.stem_polynomial != (layout.stem_poly is not None):
        raise ValueError(
            f"the layout of {family.name!r} must name the stem polynomial exactly when the "
            "family has one (stem_poly)"
        )
    return layout
