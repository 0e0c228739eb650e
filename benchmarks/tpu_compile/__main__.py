"""Compile a training config for a Cloud TPU topology on this host, before renting the pod.

    python -m benchmarks.tpu_compile --topology v5e:16x16 \
        --config configs/imagenet.py:model=convnext_afc_tiny [--config.<field>=<value> ...] \
        [--num_slices 2 --config.mesh.slices=2] --json OUT.json

Builds the mesh, shardings, optimizer, EMA, donation and dtype policy through the code
`train.py` runs (`afc_jax.train.programs`), lowers and compiles the train step and the eval
step with the TPU compiler (libtpu: `pip install "jax[tpu]==<the installed jax>"`; no TPU
needed), prints a table and writes the JSON report. Exit code 0 when both steps fit in the
chip's HBM, 1 when one does not, 2 for a bad topology, config or a missing libtpu.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

# Compiling ahead of time needs no accelerator: keep this process's own backend on the CPU
# (a TPU VM's chips stay free for a running job) and let several compiles share libtpu.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:16x16, v5p:4x4x8")
_SLICES = flags.DEFINE_integer(
    "num_slices", 1, "slices of --topology joined by the data-centre network (multislice); "
    "set the config's mesh.slices to the same number"
)
_JSON = flags.DEFINE_string("json", None, "write the report here")
_STEPS = flags.DEFINE_integer(
    "steps_per_epoch", None, "for the LR schedule only (default: ImageNet-1k at the batch)"
)
_STEPS_TO_COMPILE = flags.DEFINE_list(
    "steps", ["train_step", "eval_step"], "which steps to compile (train_step, eval_step)"
)
_HLO_DIR = flags.DEFINE_string("hlo_dir", None, "also write each step's optimized HLO here")
flags.mark_flags_as_required(["config", "topology"])


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def _slices(report: dict) -> str:
    n = report.get("slices", 1)
    return f"{n} x " if n > 1 else ""


def format_table(report: dict) -> str:
    rows = [
        f"{report['model']} on {_slices(report)}{report['topology']} ({report['devices']} devices, "
        f"{report['hosts']} hosts, mesh {report['mesh']}), global batch "
        f"{report['global_batch']} ({report['per_device_batch']}/device), {report['dtype']}",
        "step        TFLOP/dev  GB accessed/dev  HBM GB/dev (of)  fits  roofline ms (bound)  "
        "compile s",
    ]
    for name in ("train_step", "eval_step"):
        if name not in report:
            continue
        s = report[name]
        r = s["roofline"]
        rows.append(
            f"{name:<11} {s['flops_per_device'] / 1e12:9.3f}"
            f"  {_gb(s['bytes_accessed_per_device']):>15}"
            f"  {_gb(s['hbm_bytes_per_device']):>6} ({_gb(s['hbm_capacity_bytes'])})"
            f"  {'yes' if s['fits'] else 'NO':>4}  {r['step_time_s'] * 1e3:9.2f} ({r['bound_by']})"
            f"  {s['compile_s']:9.1f}"
        )
    spec = report["chip_spec"]
    rows.append(
        f"roofline: max(FLOPs / {spec['peak_flops_per_s'] / 1e12:g} TFLOP/s, bytes / "
        f"{spec['hbm_bandwidth_bytes_per_s'] / 1e9:g} GB/s) per chip ({spec['source']})"
    )
    return "\n".join(rows)


def main(argv):
    del argv
    from afc_jax.train.loop import ConfigError
    from benchmarks.tpu_compile.core import TopologyError, compile_for_topology

    try:
        report = compile_for_topology(
            _CONFIG.value,
            _TOPOLOGY.value,
            steps_per_epoch=_STEPS.value,
            keep_hlo=bool(_HLO_DIR.value),
            steps=tuple(_STEPS_TO_COMPILE.value),
            num_slices=_SLICES.value,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    except (TopologyError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    report["command"] = "python -m benchmarks.tpu_compile " + shlex.join(sys.argv[1:])
    hlo = report.pop("hlo", None)
    if hlo:
        os.makedirs(_HLO_DIR.value, exist_ok=True)
        for name, text in hlo.items():
            with open(os.path.join(_HLO_DIR.value, f"{name}.hlo.txt"), "w") as f:
                f.write(text)
    if _JSON.value:  # before printing: a closed stdout must not cost a long compile's report
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        with open(_JSON.value, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
            f.write("\n")
    print(format_table(report))
    fits = all(report[n]["fits"] for n in ("train_step", "eval_step") if n in report)
    sys.exit(0 if fits else 1)


if __name__ == "__main__":
    app.run(main)
