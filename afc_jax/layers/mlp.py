"""Inverted-bottleneck MLPs of ConvNeXt blocks (pointwise C -> 4C -> C) on NHWC inputs."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from afc_jax.layers.activations import PolynomialActivation, gelu_exact
from afc_jax.layers.conv import convnext_kernel_init
from afc_jax.ops.filter_choice import (
    FILTER_IMPLS,
    choose_fine_grid_remat,
    choose_layout,
    resolve_filter_impl,
)
from afc_jax.ops.filters import fine_grid_map, ideal_downsample, ideal_upsample
from afc_jax.ops.spectral import compute_dtype

Dtype = Any

# How AFC is computed ("reference": the official formulation; "fast": the exactly equal one
# with the pointwise layers at 1x; "auto" = "fast"). It selects the block MLP and the stem.
AFC_FORMULATIONS = ("auto", "reference", "fast")
# Whether the fast AFC MLP recomputes its fine-grid map in the backward pass ("auto": on a TPU
# other than v5p, `afc_jax.ops.filter_choice.choose_fine_grid_remat`).
FINE_GRID_REMAT = ("auto", "on", "off")


class _PointwiseMLP(nn.Module):
    expansion: int = 4
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def _dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(
            features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=convnext_kernel_init,
            name=name,
        )


class GeluMLP(_PointwiseMLP):
    """`pwconv2(gelu(pwconv1(x)))` at the input resolution (ConvNeXt, baseline, APS)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., C) -> (..., C)."""
        c = x.shape[-1]
        x = self._dense(self.expansion * c, "pwconv1")(x)
        x = gelu_exact(x)
        return self._dense(c, "pwconv2")(x)


class PointwiseDense(nn.Module):
    """`nn.Dense` over the channels of a map (same params: `kernel` (in, out), `bias` (out,)),
    reading and writing either layout, so the hidden map can be channels-first for its filters.
    """

    features: int
    in_layout: str = "nhwc"
    out_layout: str = "nhwc"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1] if self.in_layout == "nhwc" else x.shape[-3]
        kernel = self.param("kernel", convnext_kernel_init, (cin, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        src = "...hwc" if self.in_layout == "nhwc" else "...chw"
        dst = "...hwd" if self.out_layout == "nhwc" else "...dhw"
        y = jnp.einsum(f"{src},cd->{dst}", x, kernel, precision=self.precision)
        return y + (bias if self.out_layout == "nhwc" else bias[:, None, None])


class _PolynomialParams(PolynomialActivation):
    """The params of `PolynomialActivation` (same names, shapes and init), returned as
    (coef (C, 3), in_scale (1,), out_scale (1,)) so the polynomial can run in any layout."""

    @nn.compact
    def __call__(self, channels: int):
        return self._params(channels)


def resolve_afc_formulation(formulation: str) -> str:
    """"auto" -> "fast" (exact, and cheaper at every size); otherwise checks the name."""
    if formulation not in AFC_FORMULATIONS:
        raise ValueError(
            f"unknown afc_formulation {formulation!r}; choose one of {AFC_FORMULATIONS}"
        )
    return "fast" if formulation == "auto" else formulation


def resolve_fine_grid_remat(remat: bool | str) -> bool:
    """`AliasFreeMLP.remat` as a bool: "auto" by the target platform, "on"/"off" or a bool."""
    if isinstance(remat, bool):
        return remat
    if remat not in FINE_GRID_REMAT:
        raise ValueError(f"unknown fine-grid remat {remat!r}; choose one of {FINE_GRID_REMAT}")
    return choose_fine_grid_remat() if remat == "auto" else remat == "on"


class AliasFreeMLP(_PointwiseMLP):
    """AFC block MLP (spec §6) in two exactly equal formulations.

    "reference" (the official one): `upsample 2x -> pwconv1 (C -> 4C) -> per-channel quadratic
    -> pwconv2 (4C -> C) -> ideal low-pass at 1/2 -> keep the even samples`. The quadratic
    doubles the band of its input, which on the 2x grid still fits below Nyquist, so nothing
    aliases.

    "fast": the pointwise layers commute with ideal resampling (they act on channels, and the
    ideal filters keep constants), so they run at the input resolution and only the
    polynomial visits a finer grid:

        v = pwconv1(x);   y = pwconv2( band(poly(interp(v))) )

    where interp is the ideal interpolation onto the smallest alias-free grid (3N/2 for an even
    N, (3N-1)/2 for an odd one; `afc_jax.ops.filters.fine_grid_size`) and band keeps |k| < N/2 and
    samples it back on the N grid. For the linear and constant terms this is
    `c0 + c1 * drop_nyquist(s_in v)` as in the issue; the squared term is
    `down(lowpass(up(v)^2))` computed on the smaller grid (exact: the square's aliases on that
    grid all land outside the kept band). The pointwise matmuls do a quarter of the official
    work, and the filters act on the 4C hidden channels.

    formulation: "reference", "fast" or "auto" (= "fast"), see AFC_FORMULATIONS.
    filter_impl: "matrix" (separable dense DFT-as-matmul, `afc_jax.ops.filter_matrices`), "fft"
    (spectrum pad/crop) or "auto" (`afc_jax.ops.filter_choice.choose_filter_impl`, one choice
    for all of the layer's filters). The fast path can keep its hidden map channels-first
    (pwconv1 writes it so and pwconv2 reads it back), where every filter is a plain GEMM or a
    last-axis FFT.
    layout: "auto" (`afc_jax.ops.filter_choice.choose_layout`), "nchw" or "nhwc".
    remat: in the fast path, recompute the fine-grid map in the backward pass instead of
    storing it (2.25x the hidden map per block); costs one more interpolation per block. "auto"
    (default): on a TPU other than v5p, where it saves HBM and bytes
    (`filter_choice.choose_fine_grid_remat`), not elsewhere; "on"/"off" (or True/False) force
    it. Same values and gradients either way.

    Params: `pwconv1`, `act` (see `PolynomialActivation`), `pwconv2`, in both formulations.
    """

    filter_rule: str = "strict"
    formulation: str = "auto"
    filter_impl: str = "auto"
    layout: str = "auto"
    remat: bool | str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        formulation = resolve_afc_formulation(self.formulation)
        if self.filter_impl not in FILTER_IMPLS:
            raise ValueError(
                f"unknown filter_impl {self.filter_impl!r}; choose one of {FILTER_IMPLS}"
            )
        remat = resolve_fine_grid_remat(self.remat)  # a bad value fails in either formulation
        if formulation == "reference":
            return self._reference(x)
        return self._fast(x, remat)

    def _reference(self, x):
        c = x.shape[-1]
        h, w = x.shape[-3], x.shape[-2]
        # One choice for the up- and the downsampling (N -> 2N -> N).
        fi = resolve_filter_impl(self.filter_impl, "mlp_reference", max(h, w))
        y = ideal_upsample(x, 2, impl=fi)
        y = self._dense(self.expansion * c, "pwconv1")(y)
        y = PolynomialActivation(dtype=self.dtype, param_dtype=self.param_dtype, name="act")(y)
        y = self._dense(c, "pwconv2")(y)
        return ideal_downsample(y, 2, rule=self.filter_rule, impl=fi)

    def _fast(self, x, remat: bool):
        # The 2x-grid band |k| < N/2 is the same under both filter rules (official:
        # floor(2N/4) with +-N/2 dropped when 2N % 4 == 0), so `filter_rule` changes nothing.
        c = x.shape[-1]
        hidden = self.expansion * c
        h, w = x.shape[-3], x.shape[-2]
        fi = resolve_filter_impl(self.filter_impl, "mlp_fast", max(h, w))
        layout = self.layout
        if layout == "auto":
            layout = choose_layout(min(h, w), fi)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        v = PointwiseDense(hidden, "nhwc", layout, name="pwconv1", **kw)(x)
        coef, s_in, s_out = _PolynomialParams(param_dtype=self.param_dtype, name="act")(hidden)
        # Fold the scales into per-channel coefficients: s_out (c0 + c1 s_in v + c2 s_in^2 v^2).
        ct = compute_dtype(v.dtype)
        coef = coef.astype(ct)
        s_in, s_out = s_in.astype(ct)[0], s_out.astype(ct)[0]
        a = jnp.stack(
            [s_out * coef[:, 0], s_out * s_in * coef[:, 1], s_out * s_in * s_in * coef[:, 2]]
        )
        if layout == "nchw":
            a = a[:, :, None, None]

        def fine(v, a):
            def poly(p):
                return a[0] + p * (a[1] + a[2] * p)

            # v in the compute dtype: fine_grid_map computes in float32 and picks the
            # products' precision from it (`filter_matrices.filter_precision`).
            return fine_grid_map(v, poly, impl=fi, layout=layout)

        if remat:
            fine = jax.checkpoint(fine)
        y = fine(v, a).astype(v.dtype)
        return PointwiseDense(c, layout, "nhwc", name="pwconv2", **kw)(y)
