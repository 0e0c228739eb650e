"""Compile a config's train and eval steps for a TPU topology on this (CPU) host.

`compile_for_topology(config, "v5e:16x16")` builds everything through
`afc_jax.train.programs.build_programs` (what `train.py` runs), lowers both steps with abstract,
sharded arguments on the topology's devices and compiles them with the real TPU compiler
(libtpu), then reads the compiler's memory and cost analyses.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import re
import time

import jax
import ml_collections

from benchmarks.tpu_compile.chips import ChipSpec, chip_spec

__all__ = [
    "TopologyError",
    "compile_for_topology",
    "fft_dtypes",
    "get_topology_devices",
    "largest_values",
]

# Passed to the LR schedule only (its constants do not change the compiled program's cost):
# ImageNet-1k's 1,281,167 training images at the global batch.
IMAGENET_TRAIN_IMAGES = 1_281_167


class TopologyError(RuntimeError):
    """The topology cannot be described here (unknown name, or libtpu missing)."""


def _install_hint() -> str:
    return f'pip install "jax[tpu]=={jax.__version__}"'


def get_topology_devices(topology: str, num_slices: int = 1):
    """The devices of a TPU topology ("v5e:16x16"), described by libtpu without a TPU; with
    num_slices > 1, that many such slices joined by the data-centre network (multislice), each
    device carrying its `slice_index`."""
    spec = chip_spec(topology)  # unknown kinds fail here, with the known ones listed
    if num_slices < 1:
        raise TopologyError(f"num_slices must be >= 1, got {num_slices}")
    if importlib.util.find_spec("libtpu") is None:
        raise TopologyError(
            f"compiling for {topology} needs libtpu, which is not installed; install it with "
            f"{_install_hint()} (it runs on this CPU host; no TPU is needed)"
        )
    from jax.experimental import topologies

    try:
        kw = {"num_slices": num_slices} if num_slices > 1 else {}
        if spec.kind == "v4":
            # libtpu describes a v4 chip's two TensorCores as two devices unless asked for
            # megacore (one device per chip), which is how jax.make_mesh and v4 pods run.
            kw["chip_config_name"] = "megacore"
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, **kw)
    except Exception as exc:  # noqa: BLE001  (libtpu's errors are runtime errors of any kind)
        raise TopologyError(
            f"libtpu cannot describe topology {topology!r} ({exc}); use KIND:AxB for v5e/v6e "
            f"(e.g. v5e:2x2, v5e:16x16, v6e:16x16) or KIND:AxBxC for v5p/v4 (e.g. v5p:4x4x8)"
        ) from exc
    return spec, list(desc.devices)


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    out = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "generated_code_bytes": int(m.generated_code_size_in_bytes),
    }
    out["hbm_bytes_per_device"] = (
        out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    )
    return out


def _stats(compiled, chip: ChipSpec, compile_s: float) -> dict:
    cost, mem = _cost(compiled), _memory(compiled)
    flops = float(cost.get("flops", math.nan))
    accessed = float(cost.get("bytes accessed", math.nan))
    compute_s = flops / chip.peak_flops_per_s
    memory_s = accessed / chip.hbm_bandwidth_bytes_per_s
    return {
        "flops_per_device": flops,
        "bytes_accessed_per_device": accessed,
        **mem,
        "hbm_capacity_bytes": chip.hbm_capacity_bytes,
        "fits": mem["hbm_bytes_per_device"] <= chip.hbm_capacity_bytes,
        "compile_s": round(compile_s, 2),
        "roofline": {
            "step_time_s": max(compute_s, memory_s),
            "compute_bound_s": compute_s,
            "memory_bound_s": memory_s,
            "bound_by": "compute" if compute_s >= memory_s else "memory",
            "peak_flops_per_s": chip.peak_flops_per_s,
            "hbm_bandwidth_bytes_per_s": chip.hbm_bandwidth_bytes_per_s,
        },
    }


def _versions() -> dict:
    out = {"jax": jax.__version__}
    for name in ("jaxlib", "libtpu", "flax", "optax"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def compile_for_topology(
    config: ml_collections.ConfigDict,
    topology: str,
    *,
    steps_per_epoch: int | None = None,
    keep_hlo: bool = False,
    steps: tuple[str, ...] = ("train_step", "eval_step"),
    num_slices: int = 1,
    log=print,
) -> dict:
    """Lowers and compiles config's train and eval steps for `topology`; returns the report.

    `steps` selects which of the two to compile. With keep_hlo the report also holds each
    step's optimized HLO text under "hlo" (large). num_slices > 1 compiles for that many
    slices of `topology` (the config's `mesh.slices` must say the same, as on the pods).
    """
    from afc_jax.train import loop, sharding
    from afc_jax.train.programs import abstract_batch, build_programs

    chip, devices = get_topology_devices(topology, num_slices)
    hosts = len({d.process_index for d in devices})
    loop.validate(config, len(devices), hosts)
    per_epoch = steps_per_epoch or max(1, IMAGENET_TRAIN_IMAGES // config.batch_size)
    programs = build_programs(config, devices, config.data.num_classes, per_epoch)
    state = programs.abstract_state
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        state,
        programs.state_shardings,
    )
    key = jax.eval_shape(jax.random.PRNGKey, 0)  # the base key train.py passes
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(programs.mesh))
    n_params = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(state.params))
    report = {
        "topology": topology,
        "slices": num_slices,
        "chip": chip.kind,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "hosts": hosts,
        "mesh": dict(programs.mesh.shape),
        "model": config.model.name,
        "params": int(n_params),
        "dtype": config.model.dtype,
        "global_batch": int(config.batch_size),
        "per_device_batch": config.batch_size // len(devices),
        "eval_global_batch": int(config.eval_batch_size),
        "image_size": int(config.data.image_size),
        "target_platform": programs.platform,
        "chip_spec": {
            "peak_flops_per_s": chip.peak_flops_per_s,
            "hbm_bandwidth_bytes_per_s": chip.hbm_bandwidth_bytes_per_s,
            "hbm_capacity_bytes": chip.hbm_capacity_bytes,
            "source": chip.source,
        },
        "versions": _versions(),
    }
    hlo = {}
    jobs = (
        (
            "train_step",
            programs.train_step,
            (abstract_state, abstract_batch(programs, config.batch_size), rng),
        ),
        (
            "eval_step",
            programs.eval_step,
            (abstract_state.params, abstract_batch(programs, config.eval_batch_size)),
        ),
    )
    for name, step, args in jobs:
        if name not in steps:
            continue
        t0 = time.perf_counter()
        lowered = step.lower(*args)
        compiled = lowered.compile()
        report[name] = _stats(compiled, chip, time.perf_counter() - t0)
        text = compiled.as_text()
        report[name]["fft"] = fft_dtypes(lowered.as_text(), text)
        if keep_hlo:
            hlo[name] = text
        log(f"{config.model.name} {name} on {topology}: compiled in {report[name]['compile_s']}s")
    if keep_hlo:
        report["hlo"] = hlo
    return report


_STABLEHLO_FFT = re.compile(r"stablehlo\.fft .*?:\s*\((.*)\)\s*->\s*(.*)$")
_TENSOR_TYPE = re.compile(r"tensor<(?:[\d?]+x)*([a-z0-9]+(?:<[a-z0-9]+>)?)>")
_PRODUCT = re.compile(r"=\s*(\w+)\[[^\]]*\]\S*\s+(dot|convolution)\(")
_PRECISION = re.compile(r"operand_precision=\{([^}]*)\}")


def fft_dtypes(lowered_text: str, compiled_text: str) -> dict[str, dict[str, int]]:
    """How the program's FFTs compute, from both ends of the compiler.

    "lowered": {"<operand type> -> <result type>": count} of the `stablehlo.fft` ops the
    program asks for (what jax emitted: complex64 / float32 when the filters run in float32).
    "compiled": the TPU compiler rewrites FFTs into DFT products (dots / convolutions, their
    metadata still names `jit(fft)`); {"<result type> precision=<operand precisions>": count}
    of those products, so float32 at "highest" means the FFTs kept float32 accuracy.
    """
    lowered: dict[str, int] = {}
    for line in lowered_text.splitlines():
        m = _STABLEHLO_FFT.search(line)
        if m:
            ins = _TENSOR_TYPE.findall(m.group(1))
            outs = _TENSOR_TYPE.findall(m.group(2))
            key = f"{','.join(ins)} -> {','.join(outs)}"
            lowered[key] = lowered.get(key, 0) + 1
    compiled: dict[str, int] = {}
    for line in compiled_text.splitlines():
        if "jit(fft)" not in line:
            continue
        m = _PRODUCT.search(line)
        if m:
            p = _PRECISION.search(line)
            key = f"{m.group(1)} precision={p.group(1) if p else 'default'}"
            compiled[key] = compiled.get(key, 0) + 1
    return {"lowered": lowered, "compiled": compiled}


_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f64": 8,
    "s64": 8,
    "u64": 8,
    "c64": 8,
    "c128": 16,
}
_VALUE = re.compile(r"^\s*(?:ROOT\s+)?(%?[\w.\-]+)\s*=\s*(\w+)\[([\d,]*)\]\S*\s+(\w[\w\-]*)\(")


def largest_values(hlo_text: str, n: int = 10) -> list[dict]:
    """The n largest array values the HLO defines (name, op, dtype, shape, bytes), any
    computation: a first look at where temporaries go (the compiler's buffer assignment may
    share or fuse some of them)."""
    seen = []
    for line in hlo_text.splitlines():
        m = _VALUE.match(line)
        if not m or m.group(2) not in _BYTES:
            continue
        shape = [int(d) for d in m.group(3).split(",") if d]
        size = _BYTES[m.group(2)] * math.prod(shape)
        seen.append(
            {
                "name": m.group(1),
                "op": m.group(4),
                "dtype": m.group(2),
                "shape": shape,
                "bytes": size,
            }
        )
    seen.sort(key=lambda v: -v["bytes"])
    return seen[:n]
