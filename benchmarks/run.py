"""afc-jax benchmark suite: one command, one run, JSON + markdown under benchmarks/results/.

    python -m benchmarks.run            # full suite (ConvNeXt-T family at 224x224, batch 8)
    python -m benchmarks.run --quick    # smoke test: tiny models and sizes, a few seconds each

Sections (select with --sections): models (eval / train-step throughput, compile time, XLA peak
memory for ConvNeXt-T, the circular baseline-T, APS-T and AFC-T in every MLP formulation and
filter implementation), mlp (the AFC MLP at each stage's (size, channels)), filters (the other
ideal filters by FFT and by matrices), invariance (AFC logits under fractional shifts in float32
and bfloat16). Timings: 2 warm-up calls, then the median of --iters calls, all steps of a
section interleaved round-robin so that load drifts on a shared machine hit every model alike.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import jax

from benchmarks import invariance, layers, report
from benchmarks import models as model_bench
from benchmarks.timing import WARMUP, load_average

SECTIONS = ("models", "mlp", "filters", "invariance")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(argv) -> dict:
    import flax
    import jaxlib
    import numpy as np

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    device = jax.devices()[0]
    try:
        xla = device.client.platform_version
    except Exception:  # noqa: BLE001
        xla = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "backend": jax.default_backend(),
        "device": str(device),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_platform_version": xla,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny models and sizes (checks the pipeline, not speed)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default benchmarks/results, or benchmarks/results/quick)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--models", default=None,
                   help="comma-separated model labels (default: all; see benchmarks/models.py)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8; quick 2)")
    p.add_argument("--image-size", type=int, default=None, help="default 224; quick 64")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 5; quick 2)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    quick = args.quick
    if quick:
        # Smoke test: compile with most XLA optimizations off (about 2x faster compiles); the
        # numbers only check the pipeline.
        jax.config.update("jax_disable_most_optimizations", True)
    batch = args.batch or (2 if quick else 8)
    image_size = args.image_size or (64 if quick else 224)
    iters = args.iters or (2 if quick else 5)
    out_dir = args.out or (DEFAULT_OUT / "quick" if quick else DEFAULT_OUT)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    result = {
        "machine": machine_info(argv),
        "settings": {"quick": quick, "batch": batch, "image_size": image_size, "iters": iters,
                     "warmup": WARMUP, "sections": sections},
    }
    if "models" in sections:
        labels = (args.models.split(",") if args.models else
                  list(model_bench.QUICK_MODELS if quick else [m[0] for m in model_bench.MODELS]))
        log(f"models ({len(labels)}) at {image_size}x{image_size}, batch {batch}")
        res = model_bench.bench_models(labels, batch=batch, image_size=image_size, iters=iters,
                                       quick=quick, log=log)
        result["models"] = res
        result["ratios_vs_baseline"] = model_bench.ratios(res)
        result["targets"] = report.targets(res, result["ratios_vs_baseline"], quick)
    if "mlp" in sections:
        log("AFC MLP per stage")
        variants = layers.QUICK_MLP_VARIANTS if quick else [v[0] for v in layers.MLP_VARIANTS]
        stages = layers.QUICK_STAGES if quick else layers.STAGES
        result["mlp"] = layers.bench_mlp(stages, batch, iters, variants, log=log)
    if "filters" in sections:
        log("ideal filters")
        result["filters"] = layers.bench_filters(quick, batch, iters, log=log)
    if "invariance" in sections:
        log("shift invariance, float32 vs bfloat16")
        result["invariance"] = invariance.bench_invariance(quick, log=log)
    result["machine"]["load_average_end"] = load_average()
    result["total_seconds"] = time.perf_counter() - t_start

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out_dir / "benchmark.md").write_text(report.markdown(result))
    log(f"wrote {out_dir / 'benchmark.json'} and {out_dir / 'benchmark.md'}")
    return result


if __name__ == "__main__":
    main()
