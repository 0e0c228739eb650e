"""Convert an official PyTorch AFC/ConvNeXt checkpoint (.pth) into an afc-jax orbax checkpoint.

    python -m afc_jax.checkpoints.convert_torch --model convnext_afc_tiny \\
        --input convnext_afc_tiny.pth --output ckpt/afc_tiny [--which model_ema]

Reads the file without torch and without running pickle code, maps every parameter, checks a
forward pass gives finite logits, and writes `<output>/variables` + `afc_jax_model.json`.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax import models
from afc_jax.checkpoints.orbax_io import save_variables
from afc_jax.checkpoints.torch_import import from_torch_state_dict
from afc_jax.checkpoints.torch_reader import CheckpointFormatError, read_torch_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m afc_jax.checkpoints.convert_torch",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="registry name, e.g. convnext_afc_tiny")
    p.add_argument("--input", required=True, help="official .pth file")
    p.add_argument("--output", required=True, help="destination directory (must not exist)")
    p.add_argument("--num-classes", type=int, default=None, help="default: from the head weight")
    p.add_argument("--depths", type=int, nargs=4, default=None, help="for bare family names")
    p.add_argument("--dims", type=int, nargs=4, default=None, help="for bare family names")
    p.add_argument(
        "--which",
        choices=("auto", "model", "model_ema"),
        default="auto",
        help="weights to take from a training checkpoint (default: model, or the raw dict)",
    )
    p.add_argument("--check-size", type=int, default=64, help="image size of the sanity forward")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def convert(args: argparse.Namespace) -> int:
    t0 = time.time()
    state_dict = read_torch_checkpoint(args.input, which=args.which)
    num_classes = args.num_classes
    if num_classes is None:
        head = state_dict.get("head.weight", state_dict.get("module.head.weight"))
        if head is None:
            raise CheckpointFormatError(f"{args.input}: no head.weight; pass --num-classes")
        num_classes = int(np.shape(head)[0])
    kwargs: dict = {"num_classes": num_classes}
    if args.depths or args.dims:
        kwargs["depths"], kwargs["dims"] = tuple(args.depths), tuple(args.dims)
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
    args = build_parser().parse_args(argv)
    try:
        return convert(args)
    except (CheckpointFormatError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
