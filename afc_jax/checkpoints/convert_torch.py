"""Convert an official PyTorch AFC/ConvNeXt checkpoint (.pth) into an afc-jax orbax checkpoint.

    python -m afc_jax.checkpoints.convert_torch --model convnext_afc_tiny \\
        --input convnext_afc_tiny.pth --output ckpt/afc_tiny [--which model_ema]
    python -m afc_jax.checkpoints.convert_torch --model convnext_afc \\
        --depths 1,1,2,1 --dims 16,32,48,64 --input nano.pth --output ckpt/nano

Reads the file without torch and without running pickle code, maps every parameter, checks a
forward pass gives finite logits, and writes `<output>/variables` + `afc_jax_model.json`.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from afc_jax import models
from afc_jax.checkpoints.orbax_io import save_variables
from afc_jax.checkpoints.torch_import import from_torch_state_dict
from afc_jax.checkpoints.torch_reader import CheckpointFormatError, read_torch_checkpoint

USAGE_ERROR = 2


def define_flags() -> flags.FlagValues:
    """The command's absl flags, on their own FlagValues: importing this module defines no
    global flags, and `main` can be called more than once (tests)."""
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "registry name, e.g. convnext_afc_tiny", flag_values=fv)
    flags.DEFINE_string("input", None, "official .pth file", flag_values=fv)
    flags.DEFINE_string("output", None, "destination directory (must not exist)", flag_values=fv)
    flags.DEFINE_integer("num_classes", None, "default: from the head weight", flag_values=fv)
    flags.DEFINE_list("depths", None, "four stage depths, for bare family names", flag_values=fv)
    flags.DEFINE_list("dims", None, "four stage widths, for bare family names", flag_values=fv)
    flags.DEFINE_enum(
        "which",
        "auto",
        ["auto", "model", "model_ema"],
        "weights to take from a training checkpoint (auto: model, or the raw dict)",
        flag_values=fv,
    )
    flags.DEFINE_integer("check_size", 64, "image size of the sanity forward", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace an existing output", flag_values=fv)
    for name in ("model", "input", "output"):
        flags.mark_flag_as_required(name, flag_values=fv)
    return fv


def _stage_values(name: str, values) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(int(v) for v in values)
    except ValueError:
        out = ()
    if len(out) != 4:
        raise ValueError(f"--{name} takes four integers, e.g. --{name}=3,3,9,3; got {values}")
    return out


def convert(args: flags.FlagValues) -> int:
    t0 = time.time()
    depths, dims = _stage_values("depths", args.depths), _stage_values("dims", args.dims)
    state_dict = read_torch_checkpoint(args.input, which=args.which)
    num_classes = args.num_classes
    if num_classes is None:
        head = state_dict.get("head.weight", state_dict.get("module.head.weight"))
        if head is None:
            raise CheckpointFormatError(f"{args.input}: no head.weight; pass --num-classes")
        num_classes = int(np.shape(head)[0])
    kwargs: dict = {"num_classes": num_classes}
    if depths or dims:
        kwargs["depths"], kwargs["dims"] = depths, dims
    model = models.create(args.model, **kwargs)
    variables = from_torch_state_dict(state_dict, model)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(variables))
    x = jnp.zeros((1, args.check_size, args.check_size, model.in_chans), jnp.float32)
    x = x + jax.random.normal(jax.random.PRNGKey(0), x.shape)
    logits = jax.jit(model.apply)(variables, x)
    if not bool(jnp.all(jnp.isfinite(logits))):
        print("error: the converted model gives non-finite logits", file=sys.stderr)
        return 1
    out = save_variables(
        args.output,
        variables,
        model_name=args.model,
        model_kwargs=kwargs,
        extra={"source": str(args.input), "which": args.which},
        overwrite=args.overwrite,
    )
    print(
        f"converted {args.input} ({len(state_dict)} tensors, {n_params:,} parameters) "
        f"-> {out} as {args.model} with {num_classes} classes in {time.time() - t0:.1f}s"
    )
    return 0


def main(argv=None) -> int:
    """`python -m afc_jax.checkpoints.convert_torch --model ... --input ... --output ...`."""
    fv = define_flags()
    argv = list(sys.argv if argv is None else ["convert_torch", *argv])
    if {"-h", "--help", "--helpshort"} & set(argv[1:]):
        print(f"{__doc__}\n{fv.main_module_help()}")
        return 0
    try:
        fv(argv)
    except flags.Error as exc:
        print(f"error: {exc}\n\n{fv.main_module_help()}", file=sys.stderr)
        return USAGE_ERROR
    try:
        return convert(fv)
    except (CheckpointFormatError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
