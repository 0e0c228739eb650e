"""One configurable ConvNeXt skeleton for every family and ablation rung (NHWC).

    stem -> stage 0 -> [downsample -> stage i] x 3 -> global mean -> LayerNorm -> Linear

Which stem, downsampling, norm, MLP and padding are used comes from a `FamilySpec`
(`afc_jax.models.families`); the parameter tree is the same shape for every family up to the
parts a family does not have:

    downsample_layers_0   the stem: conv, [poly], norm
    downsample_layers_i   i = 1..3: norm, conv
    stages_i/blocks_j     dwconv, norm, mlp/{pwconv1, [act], pwconv2}, layer_scale/gamma
    head_norm, head

Intermediate maps are sown into the `intermediates` collection as `downsample{i}` and
`stage{i}` (pass `mutable=["intermediates"]` to `apply` to get them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.layers.activations import StemPolynomialResidual
from afc_jax.layers.conv import CircularConv, convnext_kernel_init
from afc_jax.layers.mlp import AliasFreeMLP, GeluMLP, resolve_afc_formulation
from afc_jax.layers.mlp_variants import PolynomialMLP, UpsampledGeluMLP
from afc_jax.layers.norms import LayerNorm
from afc_jax.layers.pooling import APSPool, BlurPool, IdealBlurPool
from afc_jax.layers.regularization import DropPath, LayerScale
from afc_jax.models.families import FamilySpec
from afc_jax.ops import filter_choice
from afc_jax.ops.filters import ideal_lowpass

Dtype = Any
TOTAL_STRIDE = 32
REMAT_OPTIONS = ("none", "block", "stage")


class Resample(nn.Module):
    """Reduces resolution by `factor` the way the family says (after a stride-1 conv)."""

    kind: str
    factor: int
    filter_rule: str = "strict"
    filter_impl: str | None = None
    blur_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "blur":
            return BlurPool(self.factor, filter_size=self.blur_size)(x)
        if self.kind == "ideal":
            return IdealBlurPool(
                self.factor, filter_rule=self.filter_rule, filter_impl=self.filter_impl
            )(x)
        if self.kind == "subsample":
            return BlurPool(self.factor, filter_size=1)(x)
        if self.kind == "aps":
            # APS reduces by 2 at a time; the stem applies it twice.
            for _ in range(int(np.log2(self.factor))):
                x = APSPool(2)(x)
            return x
        if self.kind == "strided":
            return x
        raise ValueError(f"unknown downsampling kind {self.kind!r}")


def resample_folds_into_conv(family: FamilySpec, afc_formulation: str = "auto") -> bool:
    """Whether the family's `resample(f)` after a stride-1 circular conv runs as a stride-f conv
    (of the low-passed input, for the ideal filter).

    Plain subsampling keeps the conv's outputs at 0, f, 2f, ...: exactly a stride-f conv of the
    same padded input. The ideal low-pass is diagonal in the Fourier basis, like the circular
    conv, so the two commute (the bias is a constant, which the filter keeps): filtering the
    conv's input instead of its output filters half the channels (in the downsampling layers)
    and leaves the conv 1/f^2 of its work. AFC folds with the "fast" formulation where
    `filter_choice.choose_lowpass_before_conv` says it pays (not on a TPU); "reference" keeps
    the official order. Exact in exact arithmetic. Read when the model is traced (the target
    platform decides).
    """
    kind = family.downsampling
    if kind == "subsample":
        return True
    fast = resolve_afc_formulation(afc_formulation) == "fast"
    return kind == "ideal" and fast and filter_choice.choose_lowpass_before_conv()


def stem_conv_stride(family: FamilySpec, afc_formulation: str = "auto") -> int:
    """Stride of the stem's conv: 4 when strided or folded with its downsampling (no stem
    polynomial, `resample_folds_into_conv`), else 1."""
    if family.stem == "strided":
        return 4
    folded = not family.stem_polynomial and resample_folds_into_conv(family, afc_formulation)
    return 4 if folded else 1


class _Configured(nn.Module):
    family: FamilySpec
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    filter_rule: str = "strict"
    afc_formulation: str = "auto"
    filter_impl: str = "auto"
    fine_grid_remat: str = "auto"

    def norm(self, name: str) -> LayerNorm:
        return LayerNorm(
            self.family.norm, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )

    def resample(self, factor: int) -> Resample:
        return Resample(
            self.family.downsampling,
            factor,
            self.filter_rule,
            self.filter_impl,
            blur_size=self.family.blur_size,
        )

    def conv(
        self, features: int, size: int, circular_pad: Sequence[int], name: str, stride: int = 1,
        **kw,
    ):
        """A size x size conv; stride `size` when the family is strided, else circular (pad
        `circular_pad` before/after on H and W) at `stride`."""
        strided = self.family.stem == "strided"
        stride = size if strided else stride
        return CircularConv(
            features,
            (size, size),
            padding=((0, 0), (0, 0)) if strided else (tuple(circular_pad),) * 2,
            strides=(stride, stride),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name=name,
            **kw,
        )

    def conv_resampled(
        self, x: jax.Array, features: int, factor: int, circular_pad: Sequence[int], name: str
    ) -> jax.Array:
        """`resample(factor)(conv(x))` with a factor x factor conv named `name`; computed as a
        strided conv where `resample_folds_into_conv` says it is the same map."""
        if not resample_folds_into_conv(self.family, self.afc_formulation):
            return self.resample(factor)(self.conv(features, factor, circular_pad, name)(x))
        if self.family.downsampling == "ideal":
            x = ideal_lowpass(
                x, 1.0 / factor, rule=self.filter_rule, impl=self.filter_impl or "auto"
            )
        return self.conv(features, factor, circular_pad, name, stride=factor)(x)


class Stem(_Configured):
    """4x4 conv to `features`, [AFC polynomial], downsampling by 4, norm.

    Without the polynomial the conv and the downsampling fold into one stride-4 conv where
    `resample_folds_into_conv` says so (of the low-passed image for the ideal filter).

    The AFC polynomial multiplies the conv output by its low-pass (cutoff 0.75). With the
    "fast" formulation (`afc_formulation` "fast"/"auto") that low-pass is taken of the
    (N, H, W, 3) image and the same conv applied to it: a circular convolution and an ideal circular
    low-pass are both diagonal in the Fourier basis, so they commute (the bias is a constant,
    which the low-pass keeps), and filtering 3 channels instead of `features` costs a
    32nd of it (ConvNeXt-T) plus one more 4x4 conv. "reference" filters the conv output,
    as the official code does.
    """

    features: int = 96

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, in_chans) -> (N, H/4, W/4, features)."""
        if not self.family.stem_polynomial:
            x = self.conv_resampled(x, self.features, 4, (1, 2), "conv")
            return self.norm("norm")(x)
        # The polynomial needs the conv output at full resolution (its band reaches 7/8 of
        # the sampling rate), so here the conv runs at stride 1.
        conv = self.conv(self.features, 4, (1, 2), "conv")
        images = x
        x = conv(images)
        poly = StemPolynomialResidual(
            filter_rule=self.filter_rule,
            filter_impl=self.filter_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="poly",
        )
        x_lowpass = None
        fast = resolve_afc_formulation(self.afc_formulation) == "fast"
        if self.family.stem == "circular" and fast:
            x_lowpass = conv(self._image_lowpass(images, poly.cutoff))
        x = poly(x, x_lowpass)
        x = self.resample(4)(x)
        return self.norm("norm")(x)

    def _image_lowpass(self, images: jax.Array, cutoff: float) -> jax.Array:
        """Ideal low-pass of the (N, H, W, C) images, computed in float32, images' dtype."""
        impl = self.filter_impl or "auto"
        return ideal_lowpass(images, cutoff, rule=self.filter_rule, impl=impl)


class Downsample(_Configured):
    """norm, 2x2 conv to `features`, downsampling by 2."""

    features: int = 192

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.norm("norm")(x)
        return self.conv_resampled(x, self.features, 2, (0, 1), "conv")


class Block(_Configured):
    """`x + drop_path(gamma * mlp(norm(dwconv7x7(x))))`."""

    drop_path: float = 0.0
    layer_scale_init: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        y = CircularConv(
            c,
            (7, 7),
            padding=((3, 3), (3, 3)),
            feature_group_count=c,
            padding_mode=self.family.dw_padding,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name="dwconv",
        )(x)
        y = self.norm("norm")(y)
        mlp_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        if self.family.mlp == "alias_free":
            y = AliasFreeMLP(
                filter_rule=self.filter_rule,
                formulation=self.afc_formulation,
                filter_impl=self.filter_impl,
                remat=self.fine_grid_remat,
                name="mlp",
                **mlp_kw,
            )(y)
        elif self.family.mlp == "poly_1x":
            y = PolynomialMLP(name="mlp", **mlp_kw)(y)
        elif self.family.mlp == "gelu_2x":
            y = UpsampledGeluMLP(filter_rule=self.filter_rule, name="mlp", **mlp_kw)(y)
        else:
            y = GeluMLP(name="mlp", **mlp_kw)(y)
        if self.layer_scale_init > 0:
            y = LayerScale(
                self.layer_scale_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="layer_scale",
            )(y)
        y = DropPath(self.drop_path)(y, deterministic=not train)
        return x + y


class Stage(_Configured):
    """A sequence of `Block`s at one resolution."""

    drop_paths: Sequence[float] = ()
    layer_scale_init: float = 1e-6
    remat_blocks: bool = False  # recompute each block's activations in the backward pass

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        # static_argnums counts self: `train` (a Python bool) stays static under remat.
        block = nn.remat(Block, static_argnums=(2,)) if self.remat_blocks else Block
        for j, rate in enumerate(self.drop_paths):
            x = block(
                family=self.family,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
                filter_rule=self.filter_rule,
                afc_formulation=self.afc_formulation,
                filter_impl=self.filter_impl,
                fine_grid_remat=self.fine_grid_remat,
                drop_path=rate,
                layer_scale_init=self.layer_scale_init,
                name=f"blocks_{j}",
            )(x, train)
        return x


class ConvNeXt(nn.Module):
    """ConvNeXt of any family (original, circular baseline, APS, AFC) on NHWC images.

    Attributes:
      family: the `FamilySpec`.
      depths: blocks per stage (4 stages).
      dims: channels per stage.
      num_classes: classifier outputs.
      in_chans: input channels (3 for RGB).
      drop_path_rate: stochastic depth rate of the last block (linear from 0).
      layer_scale_init: initial layer-scale gamma (<= 0 disables layer scale).
      head_init_scale: multiplies the initial head weights and bias.
      dtype: computation dtype (e.g. jnp.bfloat16); params stay `param_dtype`, filters and
        FFTs always run in float32.
      precision: matmul/conv precision passed to XLA (e.g. "highest" for parity on TPU).
      filter_rule: "strict" or "official" ideal-filter band rule (see `afc_jax.ops.spectral`).
      afc_formulation: how AFC is computed: "reference" (the official one: block MLPs with
        pointwise layers at 2x resolution, the stem's low-pass on the conv output), "fast"
        (pointwise layers at 1x, only the polynomial on a fine grid; the stem's low-pass on the
        image, before the conv; equal to round-off) or "auto" (= "fast"). See
        `afc_jax.layers.mlp.AliasFreeMLP` and `Stem`.
      filter_impl: ideal filters as "fft", "matrix" (separable dense DFT matrices) or "auto"
        (per layer, from map size and target platform: `afc_jax.ops.filter_choice`).
      debug: check inputs for NaN/Inf (eagerly when not traced; under jit with
        `jax.experimental.checkify`).
      remat: activation rematerialisation in training, the same function and parameters:
        "none", "block" (each block's activations recomputed in the backward pass; keeps
        only block inputs) or "stage" (only stage inputs kept; more recomputation). For
        large models or batches that do not fit in HBM (`benchmarks.tpu_compile` says).
      fine_grid_remat: whether the AFC block MLPs recompute their fine-grid maps in the
        backward pass: "auto" (on a TPU other than v5p, where it saves HBM and bytes, see
        `afc_jax.ops.filter_choice.choose_fine_grid_remat`), "on" or "off".
    """

    family: FamilySpec
    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    num_classes: int = 1000
    in_chans: int = 3
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    head_init_scale: float = 1.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    filter_rule: str = "strict"
    afc_formulation: str = "auto"
    filter_impl: str = "auto"
    debug: bool = False
    remat: str = "none"
    fine_grid_remat: str = "auto"

    def setup(self):
        if len(self.depths) != 4 or len(self.dims) != 4:
            raise ValueError(
                f"ConvNeXt has 4 stages: depths and dims need 4 entries each, "
                f"got depths={tuple(self.depths)}, dims={tuple(self.dims)}"
            )
        if self.remat not in REMAT_OPTIONS:
            raise ValueError(f"remat must be one of {REMAT_OPTIONS}, got {self.remat!r}")
        common = dict(
            family=self.family,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            filter_rule=self.filter_rule,
            afc_formulation=self.afc_formulation,
            filter_impl=self.filter_impl,
            fine_grid_remat=self.fine_grid_remat,
        )
        self.downsample_layers = [Stem(features=self.dims[0], **common)] + [
            Downsample(features=self.dims[i], **common) for i in range(1, 4)
        ]
        rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
        starts = np.cumsum((0,) + tuple(self.depths)).tolist()
        stage = nn.remat(Stage, static_argnums=(2,)) if self.remat == "stage" else Stage
        self.stages = [
            stage(
                drop_paths=tuple(rates[starts[i] : starts[i + 1]]),
                layer_scale_init=self.layer_scale_init,
                remat_blocks=self.remat == "block",
                **common,
            )
            for i in range(4)
        ]
        self.head_norm = LayerNorm("C", dtype=self.dtype, param_dtype=self.param_dtype)
        scale = self.head_init_scale
        self.head = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=lambda *a: convnext_kernel_init(*a) * scale,
            bias_init=nn.initializers.zeros,
        )

    # ------------------------------------------------------------------ validation

    def _check_input(self, images: jax.Array) -> jax.Array:
        images = jnp.asarray(images) if not isinstance(images, jax.Array) else images
        if images.ndim != 4:
            raise ValueError(
                f"{self.family.name} expects NHWC images of shape (batch, height, width, "
                f"{self.in_chans}); got an array of rank {images.ndim} with shape {images.shape}. "
                "Add a batch axis with images[None] for a single image."
            )
        n, h, w, c = images.shape
        if c != self.in_chans:
            hint = (
                " It looks like NCHW: transpose with images.transpose(0, 2, 3, 1)."
                if images.shape[1] == self.in_chans
                else ""
            )
            raise ValueError(
                f"{self.family.name} takes {self.in_chans} input channels in the last axis "
                f"(NHWC); got shape {images.shape}.{hint}"
            )
        if h < TOTAL_STRIDE or w < TOTAL_STRIDE or h % TOTAL_STRIDE or w % TOTAL_STRIDE:

            def fit(v):
                return max(TOTAL_STRIDE, round(v / TOTAL_STRIDE) * TOTAL_STRIDE)

            raise ValueError(
                f"{self.family.name} needs height and width that are positive multiples of "
                f"{TOTAL_STRIDE} (its total stride), so every stage samples the same grid; got "
                f"{h}x{w}. Resize or crop to e.g. {fit(h)}x{fit(w)}."
            )
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(
                f"images must be floating point (normalised pixels), got dtype {images.dtype}"
            )
        if self.debug:
            if isinstance(images, jax.core.Tracer):
                from jax.experimental import checkify

                checkify.debug_check(
                    jnp.all(jnp.isfinite(images)), "input images contain NaN or Inf"
                )
            elif not np.all(np.isfinite(np.asarray(images, np.float32))):
                bad = int(np.sum(~np.isfinite(np.asarray(images, np.float32))))
                raise ValueError(
                    f"input images contain {bad} NaN/Inf values (debug check); fix the input "
                    "pipeline or normalisation"
                )
        if self.dtype is not None:
            images = images.astype(self.dtype)
        return images

    # ------------------------------------------------------------------ forward

    def features(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Dense last-stage feature map before pooling.

        Args:
          images: (N, H, W, in_chans), H and W multiples of 32.
          train: enables drop path (needs a `dropout` RNG).

        Returns:
          (N, H/32, W/32, dims[-1]).
        """
        x = self._check_input(images)
        for i in range(4):
            x = self.downsample_layers[i](x)
            self.sow("intermediates", f"downsample{i}", x)
            x = self.stages[i](x, train)
            self.sow("intermediates", f"stage{i}", x)
        return x

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Logits (N, num_classes) for NHWC images (N, H, W, in_chans)."""
        x = self.features(images, train)
        x = jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2))
        x = self.head_norm(x.astype(self.dtype or x.dtype))
        return self.head(x)
