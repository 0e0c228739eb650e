"""The ConvNeXt families as configuration of one skeleton (spec §8, §11).

Besides the four main families, the ablation ladder between the circular baseline and AFC
(spec §11) is registered: each rung is the baseline or AFC with one or two fields changed
(`dataclasses.replace`), so adding a rung is a few lines at the end of this file.

A `FamilySpec` says which stem, downsampling, normalisation, MLP and padding a family uses. The
network itself is written once, in `afc_jax.models.convnext`; where the official PyTorch state
dict keeps each parameter is `afc_jax.checkpoints.torch_layout`.
"""

from __future__ import annotations

import dataclasses

STEM_KINDS = ("strided", "circular")
DOWNSAMPLING_KINDS = ("strided", "subsample", "blur", "ideal", "aps")
# "gelu": GELU at 1x; "alias_free": AFC's polynomial on the 2x grid; "poly_1x": the same
# polynomial at 1x; "gelu_2x": GELU on the 2x grid between ideal up- and down-sampling.
MLP_KINDS = ("gelu", "alias_free", "poly_1x", "gelu_2x")
POLYNOMIAL_MLPS = ("alias_free", "poly_1x")
PADDING_KINDS = ("zeros", "circular")


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What distinguishes a ConvNeXt family.

    Attributes:
      name: registry name of the family.
      stem: "strided" (4x4 conv, stride 4) or "circular" (4x4 conv at stride 1, circular pad
        (1, 2), followed by the family's downsampling by 4).
      stem_polynomial: AFC's `x + g * x * lowpass(x)` polynomial after the stem conv.
      downsampling: how resolution is reduced after a stride-1 conv: "subsample" (keep every
        k-th sample), "ideal" (ideal low-pass, then subsample), "aps" (adaptive polyphase
        sampling, by 2 at a time), "blur" (binomial blur of `blur_size` taps, circular
        padding, then subsample: BlurPool, Zhang 2019) or "strided" (the conv is strided).
      norm: "C" (per pixel over channels) or "CHW2" (alias-free) for the stem, downsampling
        and block norms.
      mlp: "gelu", "alias_free" (polynomial at 2x resolution), "poly_1x" (the polynomial at
        1x) or "gelu_2x" (GELU on the 2x grid between ideal up- and down-sampling).
      dw_padding: padding of the 7x7 depthwise conv.
      blur_size: taps of the binomial blur when `downsampling` is "blur".
    """

    name: str
    stem: str
    stem_polynomial: bool
    downsampling: str
    norm: str
    mlp: str
    dw_padding: str
    blur_size: int = 3

    @property
    def mlp_has_polynomial(self) -> bool:
        """Whether the block MLP has a polynomial activation (params `mlp/act`)."""
        return self.mlp in POLYNOMIAL_MLPS

    def __post_init__(self):
        for field, allowed in (
            ("stem", STEM_KINDS),
            ("downsampling", DOWNSAMPLING_KINDS),
            ("mlp", MLP_KINDS),
            ("dw_padding", PADDING_KINDS),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(f"FamilySpec.{field} must be one of {allowed}")
        if (self.stem == "strided") != (self.downsampling == "strided"):
            raise ValueError("a strided stem goes with strided downsampling and vice versa")
        if self.blur_size < 1:
            raise ValueError(f"FamilySpec.blur_size must be >= 1, got {self.blur_size}")


CONVNEXT_AFC = FamilySpec(
    name="convnext_afc",
    stem="circular",
    stem_polynomial=True,
    downsampling="ideal",
    norm="CHW2",
    mlp="alias_free",
    dw_padding="circular",
)

CONVNEXT_BASELINE_CIRCULAR = FamilySpec(
    name="convnext_baseline_circular",
    stem="circular",
    stem_polynomial=False,
    downsampling="subsample",
    norm="C",
    mlp="gelu",
    dw_padding="circular",
)

CONVNEXT_APS = FamilySpec(
    name="convnext_aps",
    stem="circular",
    stem_polynomial=False,
    downsampling="aps",
    norm="C",
    mlp="gelu",
    dw_padding="circular",
)

CONVNEXT = FamilySpec(
    name="convnext",
    stem="strided",
    stem_polynomial=False,
    downsampling="strided",
    norm="C",
    mlp="gelu",
    dw_padding="zeros",
)


def ablation(base: FamilySpec, name: str, **changes) -> FamilySpec:
    """`base` with the given fields changed: one rung of the ablation ladder."""
    return dataclasses.replace(base, name=name, **changes)


# The ablation ladder (spec §11), from the circular baseline towards AFC.
_BASELINE = CONVNEXT_BASELINE_CIRCULAR
CONVNEXT_BLURPOOL = ablation(_BASELINE, "convnext_blurpool", downsampling="blur")
CONVNEXT_IDEAL_LPF = ablation(_BASELINE, "convnext_ideal_lpf", downsampling="ideal")
CONVNEXT_IDEAL_LPF_AFLN = ablation(CONVNEXT_IDEAL_LPF, "convnext_ideal_lpf_afln", norm="CHW2")
CONVNEXT_AFC_POLY1X = ablation(CONVNEXT_AFC, "convnext_afc_poly1x", mlp="poly_1x")
CONVNEXT_AFC_NOSTEM = ablation(CONVNEXT_AFC, "convnext_afc_nostem", stem_polynomial=False)
CONVNEXT_AFC_LN_C = ablation(CONVNEXT_AFC, "convnext_afc_ln_c", norm="C")
# Not an official rung: GELU on the 2x grid (the alias-free GAN treatment). GELU is not
# band-limited, so this reduces aliasing but cannot remove it: the answer to "why polynomials".
CONVNEXT_AFC_UPGELU = ablation(CONVNEXT_AFC, "convnext_afc_upgelu", mlp="gelu_2x")

ABLATIONS = (
    CONVNEXT_BLURPOOL,
    CONVNEXT_IDEAL_LPF,
    CONVNEXT_IDEAL_LPF_AFLN,
    CONVNEXT_AFC_POLY1X,
    CONVNEXT_AFC_NOSTEM,
    CONVNEXT_AFC_LN_C,
    CONVNEXT_AFC_UPGELU,
)

FAMILIES = {
    spec.name: spec
    for spec in (CONVNEXT_AFC, CONVNEXT_BASELINE_CIRCULAR, CONVNEXT_APS, CONVNEXT) + ABLATIONS
}

# depths, dims (spec §8)
SIZES = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}
