"""Per-layer maps of any ConvNeXt family: what the network computes at each layer, and each
nonlinearity with its input, so it can be re-evaluated on a finer grid.

Layer maps come from Flax's `capture_intermediates` (module outputs); the block activation is
not a module, so it is recomputed from the captured norm output and the MLP's parameters, the
way the family evaluates it (1x, or on the 2x grid between ideal resampling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.layers.activations import StemPolynomialResidual, gelu_exact
from afc_jax.layers.norms import LayerNorm
from afc_jax.models.convnext import stem_conv_stride
from afc_jax.ops.resampling import on_fine_grid

STEM_STRIDE = 4


@dataclasses.dataclass(frozen=True)
class Layer:
    """A probed layer: its name, the stride of its grid relative to the input image, and the
    fraction of its band that the following layers keep (the AFC stem's polynomial is followed
    by an ideal low-pass at 1/4: what it puts above that never reaches the features)."""

    name: str
    stride: int
    keep: float = 1.0


@dataclasses.dataclass(frozen=True)
class Nonlinearity:
    """A nonlinearity of the network, for the aliasing spectrum.

    Attributes:
      name: layer name (as in `layer_maps`).
      kind: "gelu", "polynomial", "stem_polynomial", "layernorm_C" or "layernorm_CHW2".
      input: (N, h, w, C) map the nonlinearity acts on, on the layer's grid.
      make_fn: (fine-grid factor F, channels) -> the nonlinearity evaluated on a grid F times
        finer (a function of (N, F h, F w, C') maps); F matters only for the stem polynomial's
        low-pass; `channels` (an index array, or None for all) selects the channels of a
        pointwise nonlinearity, which is then fed only those.
      eval_factor: the grid the network evaluates it on, relative to the layer's grid (1 or 2).
      keep: fraction of that grid's band that the next layers keep (the stem's ideal
        low-pass keeps 1/4, AFC's MLP low-pass 1/2, otherwise 1).
      pointwise: acts on each channel separately (so channels may be subsampled).
    """

    name: str
    kind: str
    input: jax.Array
    make_fn: Callable[[int, np.ndarray | None], Callable[[jax.Array], jax.Array]]
    eval_factor: int
    keep: float
    pointwise: bool


def _wanted(module: nn.Module, method: str) -> bool:
    if method != "__call__":
        return False
    path = module.path
    if len(path) == 1:
        return path[0].startswith("downsample_layers_")
    if len(path) == 2 and path[0].startswith("downsample_layers_"):
        return path[1] in ("conv", "poly", "norm") or path[1].startswith("Resample")
    if len(path) == 2 and path[0].startswith("stages_"):
        return True
    if len(path) == 3 and path[0].startswith("stages_"):
        return path[2] in ("dwconv", "norm", "mlp")
    return False


def capture(model: nn.Module, variables, images: jax.Array) -> tuple[jax.Array, dict]:
    """(logits, captured module outputs) of `model` on NHWC `images` (jittable)."""
    logits, state = model.apply(
        variables, images, capture_intermediates=_wanted, mutable=["intermediates"]
    )
    return logits, state["intermediates"]


def _out(tree: dict, *path: str) -> jax.Array:
    node = tree
    for k in path:
        node = node[k]
    return node["__call__"][0]


def polynomial_fn(params, channels: np.ndarray | None = None) -> Callable[[jax.Array], jax.Array]:
    """The per-channel quadratic of `PolynomialActivation` with these params (of `channels`)."""
    coef = jnp.asarray(params["coef"], jnp.float32)
    if channels is not None:
        coef = coef[channels]
    s_in = jnp.asarray(params["in_scale"], jnp.float32)[0]
    s_out = jnp.asarray(params["out_scale"], jnp.float32)[0]

    def fn(x):
        xs = s_in * x
        return s_out * (coef[:, 0] + xs * (coef[:, 1] + coef[:, 2] * xs))

    return fn


def activation_of(family, mlp_params, channels=None) -> tuple[str, Callable, int, float]:
    """(kind, pointwise function, evaluation grid factor, kept band) of a block's activation."""
    if family.mlp in ("alias_free", "poly_1x"):
        fn, kind = polynomial_fn(mlp_params["act"], channels), "polynomial"
    else:
        fn, kind = gelu_exact, "gelu"
    factor = 2 if family.mlp in ("alias_free", "gelu_2x") else 1
    return kind, fn, factor, 1.0 / factor


def _norm_fn(kind: str, params) -> Callable[[jax.Array], jax.Array]:
    norm = LayerNorm(kind)
    return lambda x: norm.apply({"params": params}, x)


def _norm(name: str, family, params, x) -> Nonlinearity:
    fn = _norm_fn(family.norm, params)
    return Nonlinearity(name, f"layernorm_{family.norm}", x, lambda f, ch: fn, 1, 1.0, False)


def _stem_keep(family) -> float:
    return 1.0 / STEM_STRIDE if family.downsampling == "ideal" else 1.0


def layers_of(model) -> list[Layer]:
    """Every probed layer of `model`, in forward order, with its stride."""
    out = [Layer("stem.conv", stem_conv_stride(model.family, model.afc_formulation))]
    if model.family.stem_polynomial:
        out.append(Layer("stem.poly", 1, _stem_keep(model.family)))
    out.append(Layer("stem", STEM_STRIDE))
    for i, depth in enumerate(model.depths):
        stride = STEM_STRIDE * 2**i
        if i > 0:
            out.append(Layer(f"downsample{i}.norm", stride // 2))
            out.append(Layer(f"downsample{i}", stride))
        for j in range(depth):
            out += [Layer(f"s{i}.b{j}.{part}", stride) for part in ("norm", "act", "mlp", "out")]
    out.append(Layer("logits", 0))
    return out


def probe(model, variables, images: jax.Array) -> tuple[dict, dict]:
    """Runs `model` once and returns (layer maps, nonlinearity inputs), jittable.

    Args:
      model: a `ConvNeXt` of any family.
      variables: its variables ({"params": ...}).
      images: (N, H, W, C) NHWC images.

    Returns:
      maps: layer name (see `layers_of`) -> (N, h, w, C) map, "logits" -> (N, classes).
      inputs: nonlinearity name -> the (N, h, w, C) map it acts on: "stem.poly" (the stem
        conv output), "stem.norm", "downsample{i}.norm", "s{i}.b{j}.norm" (their inputs) and
        "s{i}.b{j}.act" (the pre-activation, pwconv1's output at 1x).
    """
    params = variables["params"]
    logits, cap = capture(model, variables, images)
    stem = cap["downsample_layers_0"]
    maps = {"stem.conv": _out(stem, "conv")}
    # The norm's input: the resampled conv output, or the conv output when the two fold.
    folded = stem_conv_stride(model.family, model.afc_formulation) == STEM_STRIDE
    norm_in = maps["stem.conv"] if folded else stem[_resample_key(stem)]["__call__"][0]
    inputs = {"stem.norm": norm_in}
    if model.family.stem_polynomial:
        maps["stem.poly"] = _out(stem, "poly")
        inputs["stem.poly"] = maps["stem.conv"]
    maps["stem"] = _out(cap, "downsample_layers_0")
    x = maps["stem"]
    for i, depth in enumerate(model.depths):
        if i > 0:
            inputs[f"downsample{i}.norm"] = x
            maps[f"downsample{i}.norm"] = _out(cap, f"downsample_layers_{i}", "norm")
            maps[f"downsample{i}"] = x = _out(cap, f"downsample_layers_{i}")
        for j in range(depth):
            block = cap[f"stages_{i}"][f"blocks_{j}"]
            name = f"s{i}.b{j}"
            mlp = params[f"stages_{i}"][f"blocks_{j}"]["mlp"]
            inputs[f"{name}.norm"] = _out(block, "dwconv")
            maps[f"{name}.norm"] = y = _out(block, "norm")
            w1 = mlp["pwconv1"]
            h = jnp.einsum("...c,cd->...d", y.astype(jnp.float32), w1["kernel"]) + w1["bias"]
            inputs[f"{name}.act"] = h
            _, fn, factor, _ = activation_of(model.family, mlp)
            maps[f"{name}.act"] = on_fine_grid(h, fn, factor) if factor > 1 else fn(h)
            maps[f"{name}.mlp"] = _out(block, "mlp")
            maps[f"{name}.out"] = x = _out(block)
    maps["logits"] = logits
    return maps, inputs


def _resample_key(stem: dict) -> str:
    keys = [k for k in stem if k.startswith("Resample")]
    if len(keys) != 1:
        raise ValueError(f"expected one Resample module in the stem, found {sorted(stem)}")
    return keys[0]


def nonlinearities(model, variables, inputs: dict) -> list[Nonlinearity]:
    """Every nonlinearity of `model` with its input (from `probe`), in forward order."""
    params = variables["params"]
    family = model.family
    out = []
    if family.stem_polynomial:
        poly_params = params["downsample_layers_0"]["poly"]

        def stem_poly(factor: int, channels=None):
            # The stem polynomial's low-pass has cutoff 0.75 of the layer grid's band, which is
            # 0.75 / factor of a grid `factor` times finer.
            module = StemPolynomialResidual(cutoff=0.75 / factor)
            return lambda x: module.apply({"params": poly_params}, x)

        keep = _stem_keep(family)
        out.append(
            Nonlinearity(
                "stem.poly", "stem_polynomial", inputs["stem.poly"], stem_poly, 1, keep, False
            )
        )
    out.append(_norm("stem", family, params["downsample_layers_0"]["norm"], inputs["stem.norm"]))
    for i, depth in enumerate(model.depths):
        if i > 0:
            p = params[f"downsample_layers_{i}"]["norm"]
            out.append(_norm(f"downsample{i}.norm", family, p, inputs[f"downsample{i}.norm"]))
        for j in range(depth):
            name = f"s{i}.b{j}"
            block = params[f"stages_{i}"][f"blocks_{j}"]
            out.append(_norm(f"{name}.norm", family, block["norm"], inputs[f"{name}.norm"]))
            kind, _, factor, keep = activation_of(family, block["mlp"])

            def act(f, channels, mlp=block["mlp"]):
                return activation_of(family, mlp, channels)[1]

            out.append(
                Nonlinearity(
                    f"{name}.act",
                    kind,
                    inputs[f"{name}.act"],
                    act,
                    factor,
                    keep,
                    True,
                )
            )
    return out
