"""Where AFC-T's extra TPU cost sits: each part of the network, AFC vs the circular baseline.

    python -m benchmarks.tpu_compile.parts [--batch 32] [--parts stem,down2,...,block4]
        [--fine_grid_remat off]

Compiles forward + backward of one stem, one downsampling layer (stages 2-4) and one block
(stages 1-4) of ConvNeXt-T for one v5e chip (libtpu on this host; the TPU's "auto" choices,
bfloat16 compute, 32 images as in `benchmarks/README.md` "AFC-T vs baseline-T on a TPU"). The
stem is differentiated to its parameters only (nothing upstream needs the images' gradient),
the other parts to parameters and input. Each row is also multiplied by how often the part
occurs in ConvNeXt-T (blocks 3, 3, 9, 3), so the "x count" columns add up to most of a train
step; what they leave out is the head, the loss and the optimizer update, the same for both.
A quick way (seconds per part) to see which part to work on before compiling the whole model.
Blocks store their fine-grid maps for the backward pass by default here (`--fine_grid_remat
off`; see `benchmarks/tpu_compile/mlp.py` for why a part alone is measured so).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

DEPTHS = (3, 3, 9, 3)
DIMS = (96, 192, 384, 768)
PARTS = ("stem", "down2", "down3", "down4", "block1", "block2", "block3", "block4")


def build(part: str, family, fine_grid_remat: str = "off"):
    """(module, input size, input channels, input gradient?, count in ConvNeXt-T)."""
    import jax.numpy as jnp

    from afc_jax.models import convnext

    common = dict(
        family=family, dtype=jnp.bfloat16, filter_impl="auto", fine_grid_remat=fine_grid_remat
    )
    if part == "stem":
        return convnext.Stem(features=DIMS[0], **common), 224, 3, False, 1
    stage = int(part[-1])
    n, c = 56 >> (stage - 1), DIMS[stage - 1]
    if part.startswith("down"):  # from the previous stage's map
        return convnext.Downsample(features=c, **common), 2 * n, DIMS[stage - 2], True, 1
    return convnext.Block(**common), n, c, True, DEPTHS[stage - 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--fine_grid_remat", default="off", choices=("auto", "on", "off"))
    args = p.parse_args()
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")

    from afc_jax.models.families import CONVNEXT_AFC, CONVNEXT_BASELINE_CIRCULAR
    from benchmarks.tpu_compile.core import get_topology_devices
    from benchmarks.tpu_compile.mlp import compile_cost

    _, devices = get_topology_devices("v5e:2x2")
    print(f"one v5e chip, {args.batch} images, bfloat16; per part, and x its count in ConvNeXt-T")
    print("part     count  model     GFLOP  GB accessed  temp GB   x count: GFLOP      GB")
    for part in parts:
        for name, family in (("baseline", CONVNEXT_BASELINE_CIRCULAR), ("AFC", CONVNEXT_AFC)):
            module, n, c, input_grad, count = build(part, family, args.fine_grid_remat)
            r = compile_cost(module, n, c, args.batch, devices[0], input_grad=input_grad)
            gflop, gb = r["gflop"], r["gb_accessed"]
            print(
                f"{part:8} {count:5}  {name:8} {gflop:6.1f}  {gb:11.2f}  {r['temp_gb']:7.2f}"
                f"   {gflop * count:14.1f}  {gb * count:6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
