"""TPU compiler costs of one block MLP: AFC (as configured) vs the GELU MLP of the baseline.

    python -m benchmarks.tpu_compile.mlp [--batch 32] [--stages 1,2,3,4] [--layout auto]
        [--fine_grid_remat off]

Forward + backward (to parameters and input) of one MLP at each ConvNeXt-T stage, bfloat16
compute, compiled for one v5e chip (libtpu, on this host) with the TPU's "auto" choices:
GFLOP, GB accessed and temporaries per step. A quick way to compare filter variants without
compiling a whole model (minutes instead of tens of minutes on a busy 2-core host).

The fine-grid map is stored for the backward pass by default here (`--fine_grid_remat off`),
although a TPU model recomputes it ("auto"): alone, an MLP has no memory pressure, and
recomputing only adds work; in the whole train step it saves HBM and bytes
(`afc_jax.ops.filter_choice.choose_fine_grid_remat`).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

STAGES = ((56, 96), (28, 192), (14, 384), (7, 768))


def compile_cost(module, n: int, c: int, batch: int, device, input_grad: bool = True) -> dict:
    """Forward + backward of `module` on a (batch, n, n, c) bfloat16 map, compiled for one chip:
    gradients to the parameters and (input_grad) to the input, as inside a network."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from afc_jax.ops.platform import targeting

    rep = NamedSharding(Mesh(np.array([device]), ("d",)), PartitionSpec())
    x = jax.ShapeDtypeStruct((batch, n, n, c), jnp.bfloat16, sharding=rep)
    with targeting("tpu"):
        params = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, n, n, c)))
        params = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), params
        )

        def loss(p, x):
            return jnp.sum(module.apply(p, x).astype(jnp.float32) ** 2)

        t0 = time.perf_counter()
        argnums = (0, 1) if input_grad else 0
        compiled = jax.jit(jax.value_and_grad(loss, argnums=argnums)).lower(params, x).compile()
        seconds = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "gflop": cost["flops"] / 1e9,
        "gb_accessed": cost["bytes accessed"] / 1e9,
        "temp_gb": compiled.memory_analysis().temp_size_in_bytes / 1e9,
        "compile_s": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--stages", default="1,2,3,4")
    p.add_argument("--layout", default="auto", choices=("auto", "nchw", "nhwc"))
    p.add_argument("--fine_grid_remat", default="off", choices=("auto", "on", "off"))
    args = p.parse_args()
    import jax.numpy as jnp

    from afc_jax.layers.mlp import AliasFreeMLP, GeluMLP
    from benchmarks.tpu_compile.core import get_topology_devices

    _, devices = get_topology_devices("v5e:2x2")
    print("stage  (N, C)      MLP   GFLOP  GB accessed  temp GB")
    for i in (int(s) for s in args.stages.split(",")):
        n, c = STAGES[i - 1]
        for name, module in (
            ("GELU", GeluMLP(dtype=jnp.bfloat16)),
            ("AFC", AliasFreeMLP(
                dtype=jnp.bfloat16, layout=args.layout, remat=args.fine_grid_remat
            )),
        ):
            r = compile_cost(module, n, c, args.batch, devices[0])
            print(
                f"{i:5}  ({n:2}, {c:3})  {name:5} {r['gflop']:6.1f}  {r['gb_accessed']:11.2f}"
                f"  {r['temp_gb']:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
