"""Official PyTorch state dict -> Flax variables, for every family and size.

The key table is derived from the family's key layout (`torch_layout.layout_of`) and its
depths, so one function serves every family. Layout conversions:

- Conv2d weight (out, in/groups, kh, kw) -> Flax kernel (kh, kw, in/groups, out);
- Linear weight (out, in) -> Dense kernel (in, out);
- polynomial `coef` (C, 3, 1, 1) -> (C, 3);
- everything else (biases, norm weights, gammas, scales) unchanged.

On import, cached filter masks (`*.rect`, size dependent, created on the first forward) and the
constant blur filters (`*.filt.filt`: the circular baseline's 1-tap filter, the blur rung's
binomial) are ignored. On export (`to_torch_state_dict`) those constant filters are written
(`torch_buffers`), so the official model loads the result with `strict=True`; `.rect` masks are
not (the official model creates them lazily).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.checkpoints.torch_layout import layout_of
from afc_jax.models.convnext import ConvNeXt

IGNORED_SUFFIXES = (".rect", ".filt.filt")


class StateDictMismatchError(ValueError):
    """The state dict does not fit the model: missing, unexpected or mis-shaped keys."""


@dataclasses.dataclass(frozen=True)
class KeyMapping:
    torch_key: str
    flax_path: tuple[str, ...]
    kind: str  # "conv", "linear", "coef" or "plain"


def _to_flax(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.transpose(array, (2, 3, 1, 0))
    if kind == "linear":
        return np.transpose(array, (1, 0))
    if kind == "coef":
        return array.reshape(array.shape[0], array.shape[1])
    return array


def _torch_shape(kind: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "conv":
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    if kind == "linear":
        return tuple(reversed(flax_shape))
    if kind == "coef":
        return tuple(flax_shape) + (1, 1)
    return tuple(flax_shape)


def torch_key_mapping(model: ConvNeXt) -> list[KeyMapping]:
    """Every parameter of `model` with its official state-dict key."""
    layout = layout_of(model.family)
    out: list[KeyMapping] = []

    def add(prefix: str, path: tuple[str, ...], kind_of_weight: str, weight="weight", bias="bias"):
        out.append(KeyMapping(f"{prefix}.{weight}", path + ("kernel",), kind_of_weight))
        out.append(KeyMapping(f"{prefix}.{bias}", path + ("bias",), "plain"))

    def norm(prefix: str, path: tuple[str, ...]):
        out.append(KeyMapping(f"{prefix}.weight", path + ("scale",), "plain"))
        out.append(KeyMapping(f"{prefix}.bias", path + ("bias",), "plain"))

    def poly(prefix: str, path: tuple[str, ...]):
        out.append(KeyMapping(f"{prefix}.coef", path + ("coef",), "coef"))
        out.append(KeyMapping(f"{prefix}.in_scale", path + ("in_scale",), "plain"))
        out.append(KeyMapping(f"{prefix}.out_scale", path + ("out_scale",), "plain"))

    stem = ("downsample_layers_0",)
    add(layout.stem_conv, stem + ("conv",), "conv")
    if model.family.stem_polynomial:
        out.append(KeyMapping(f"{layout.stem_poly}.gamma", stem + ("poly", "gamma"), "plain"))
        poly(f"{layout.stem_poly}.residual.0", stem + ("poly", "act"))
    norm(layout.stem_norm, stem + ("norm",))
    for i in range(1, 4):
        path = (f"downsample_layers_{i}",)
        norm(layout.downsample_norm.format(i=i), path + ("norm",))
        add(layout.downsample_conv.format(i=i), path + ("conv",), "conv")
    for i, depth in enumerate(model.depths):
        for j in range(depth):
            path = (f"stages_{i}", f"blocks_{j}")
            add(layout.block_dwconv.format(i=i, j=j), path + ("dwconv",), "conv")
            norm(f"stages.{i}.{j}.norm", path + ("norm",))
            prefix = layout.block_prefix.format(i=i, j=j)
            add(f"{prefix}pwconv1", path + ("mlp", "pwconv1"), "linear")
            if model.family.mlp_has_polynomial:
                poly(f"{prefix}act", path + ("mlp", "act"))
            add(f"{prefix}pwconv2", path + ("mlp", "pwconv2"), "linear")
            if model.layer_scale_init > 0:
                out.append(
                    KeyMapping(f"stages.{i}.{j}.gamma", path + ("layer_scale", "gamma"), "plain")
                )
    norm("norm", ("head_norm",))
    add("head", ("head",), "linear")
    return out


def _flatten(tree, prefix=()) -> dict[tuple[str, ...], object]:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, prefix + (k,)))
        else:
            flat[prefix + (k,)] = v
    return flat


def _unflatten(flat: Mapping[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def abstract_params(model: ConvNeXt) -> dict:
    """Shapes/dtypes of the model's params without allocating them."""
    x = jax.ShapeDtypeStruct((1, 32, 32, model.in_chans), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
    return variables["params"]


def _limited(items, n=12) -> str:
    items = sorted(items)
    text = ", ".join(items[:n])
    return text + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def from_torch_state_dict(state_dict: Mapping[str, object], model: ConvNeXt) -> dict:
    """Converts an official PyTorch state dict into Flax variables for `model`.

    Args:
      state_dict: mapping from official key to array (numpy, or anything `np.asarray` takes,
        e.g. the output of `read_torch_checkpoint`). A DataParallel `module.` prefix is
        stripped.
      model: the `ConvNeXt` built with the matching family, depths, dims and num_classes.

    Returns:
      `{"params": ...}` ready for `model.apply`, in the model's `param_dtype`.

    Raises:
      StateDictMismatchError: naming every missing, unexpected or mis-shaped key.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of name -> array, got {type(state_dict).__name__}; "
            "read a .pth file with afc_jax.checkpoints.read_torch_checkpoint"
        )
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    mapping = torch_key_mapping(model)
    expected = {m.torch_key for m in mapping}
    given = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)}
    missing = expected - given
    unexpected = given - expected

    shapes = _flatten(abstract_params(model))
    mapped_paths = {m.flax_path for m in mapping}
    if mapped_paths != set(shapes):  # a bug in the table, not in the user's file
        raise AssertionError(
            f"internal key table out of sync with the model: {sorted(set(shapes) ^ mapped_paths)}"
        )

    flat = {}
    wrong_shape = []
    for m in mapping:
        if m.torch_key not in state_dict:
            continue
        array = np.asarray(state_dict[m.torch_key])
        want = tuple(shapes[m.flax_path].shape)
        want_torch = _torch_shape(m.kind, want)
        if tuple(array.shape) != want_torch:
            wrong_shape.append(f"{m.torch_key}: got {tuple(array.shape)}, model needs {want_torch}")
            continue
        flat[m.flax_path] = jnp.asarray(_to_flax(m.kind, array), dtype=model.param_dtype)

    if missing or unexpected or wrong_shape:
        parts = [
            f"state dict does not match {model.family.name} with depths={tuple(model.depths)}, "
            f"dims={tuple(model.dims)}, num_classes={model.num_classes}:"
        ]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_limited(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_limited(unexpected)}")
        if wrong_shape:
            parts.append(f"  wrong shapes ({len(wrong_shape)}): " + "; ".join(wrong_shape[:12]))
        parts.append(
            "Check that the model name/size and num_classes match the checkpoint (e.g. "
            "models.create('convnext_afc_tiny', num_classes=1000))."
        )
        raise StateDictMismatchError("\n".join(parts))
    return {"params": _unflatten(flat)}


def _binomial_filter(taps: int, channels: int) -> np.ndarray:
    """(channels, 1, taps, taps) float32: the normalised outer product of binomial taps."""
    row = np.array([math.comb(taps - 1, k) for k in range(taps)], np.float64)
    filt = np.outer(row, row)
    filt = filt / filt.sum()
    return np.ascontiguousarray(np.broadcast_to(filt, (channels, 1, taps, taps)), np.float32)


def torch_buffers(model: ConvNeXt) -> dict[str, np.ndarray]:
    """The constant buffers the official model registers at construction (key -> array).

    Families that downsample with the official BlurPool module (the circular baseline: 1 tap,
    i.e. plain subsampling; the blur rung: `blur_size` taps) hold its filter as
    `<module>.filt.filt`, one copy per channel: in the stem just before the stem norm, and in
    each downsampling layer just after its conv. Other families have none (`.rect` masks are
    created by the first forward pass and are not included).
    """
    family = model.family
    if family.downsampling not in ("subsample", "blur"):
        return {}
    taps = 1 if family.downsampling == "subsample" else family.blur_size
    layout = layout_of(family)

    def after(key: str, step: int) -> str:
        prefix, _, index = key.rpartition(".")
        return f"{prefix}.{int(index) + step}"

    out = {f"{after(layout.stem_norm, -1)}.filt.filt": _binomial_filter(taps, model.dims[0])}
    for i in range(1, 4):
        conv_module = layout.downsample_conv.format(i=i).rpartition(".")[0]
        out[f"{after(conv_module, 1)}.filt.filt"] = _binomial_filter(taps, model.dims[i])
    return out


def to_torch_state_dict(variables: Mapping, model: ConvNeXt) -> dict[str, np.ndarray]:
    """The inverse of `from_torch_state_dict` (official key -> numpy array), plus the official
    model's constant buffers (`torch_buffers`): every key the official model has at
    construction, so `load_state_dict(..., strict=True)` accepts it."""
    flat = _flatten(variables["params"] if "params" in variables else variables)
    out = {}
    for m in torch_key_mapping(model):
        a = np.asarray(flat[m.flax_path])
        if m.kind == "conv":
            a = np.transpose(a, (3, 2, 0, 1))
        elif m.kind == "linear":
            a = a.T
        elif m.kind == "coef":
            a = a.reshape(a.shape + (1, 1))
        out[m.torch_key] = np.ascontiguousarray(a)
    out.update(torch_buffers(model))
    return out
