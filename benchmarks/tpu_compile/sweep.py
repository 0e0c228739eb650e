"""The compile table: every family x size at the paper's batch on TPU pods (issue 12, item 2).

    python -m benchmarks.tpu_compile.sweep [--out benchmarks/results] [--only v5e:16x16]
        [--models convnext_afc_tiny,...] [--redo] [--jobs 2]

Runs `python -m benchmarks.tpu_compile` once per configuration (one process each; `--jobs`
at a time, default 1: a compile keeps about one core busy and the large ones need ~4-8 GB),
with `configs/imagenet.py`, global batch 4096, eval batch 1024, bfloat16 compute. When a
step does not fit in HBM the next setting of `FIT_LADDER` is tried, and the table says which
one fits. Results are appended to `tpu_compile.json` and the markdown is rewritten after every
configuration, so an interrupted sweep keeps what finished; running it again skips those.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import time

FAMILIES = ("convnext_afc", "convnext_baseline_circular", "convnext_aps", "convnext")
SIZES = ("tiny", "small", "base", "large", "xlarge")
POD = "v5e:16x16"
EXTRA = (
    ("v5p:4x4x8", "v6e:16x16"),
    ("convnext_afc", "convnext_baseline_circular"),
    ("tiny", "base"),
)
COMMON = (
    "--config.model.dtype=bfloat16",
    "--config.batch_size=4096",
    "--config.eval_batch_size=1024",
)
# Tried in order until both steps fit: rematerialise per block, then also shard parameters and
# optimizer state over 16 devices, then per stage, then a smaller per-device eval batch.
FIT_LADDER = (
    (),
    ("--config.model.remat=block",),
    ("--config.model.remat=block", "--config.mesh.fsdp=16"),
    ("--config.model.remat=stage", "--config.mesh.fsdp=16"),
    ("--config.model.remat=stage", "--config.mesh.fsdp=16", "--config.eval_batch_size=512"),
)


def plan(only: str | None) -> list[tuple[str, str]]:
    """(topology, model) pairs: the four tiny models on the v5e pod (baseline and AFC first),
    AFC-XL, then the other sizes, then the v5p/v6e rows."""
    runs = [(POD, f"{f}_tiny") for f in FAMILIES[1::-1] + FAMILIES[2:]]
    runs += [(POD, "convnext_afc_xlarge")]  # the one most likely not to fit
    runs += [(POD, f"{f}_{s}") for s in SIZES[1:] for f in FAMILIES]
    runs = list(dict.fromkeys(runs))
    topos, fams, sizes = EXTRA
    runs += [(t, f"{f}_{s}") for t in topos for s in sizes for f in fams[::-1]]
    return [r for r in runs if only is None or r[0] == only]


def _row(r: dict) -> str:
    t, e = r["train_step"], r["eval_step"]
    gb = 1e9
    return (
        f"| {r['model']} | {r['topology']} | {r['per_device_batch']} | "
        f"{r['setting'] or 'default'} | "
        f"{t['flops_per_device'] / 1e12:.2f} | {t['bytes_accessed_per_device'] / gb:.1f} | "
        f"{t['hbm_bytes_per_device'] / gb:.2f} / {t['hbm_capacity_bytes'] / gb:.0f} | "
        f"{'yes' if t['fits'] else 'NO'} | {t['roofline']['step_time_s'] * 1e3:.1f} "
        f"({t['roofline']['bound_by'][0]}) | {e['hbm_bytes_per_device'] / gb:.2f} | "
        f"{'yes' if e['fits'] else 'NO'} | {t['compile_s'] + e['compile_s']:.0f} | "
        f"{r.get('commit', 'see above')} |"
    )


def write_markdown(results: list[dict], failures: list[dict], path: str, header: str) -> None:
    lines = [
        "# TPU compile table (issue 12)",
        "",
        header,
        "",
        "Per device and step, as the TPU compiler (libtpu) reports for the program `train.py` "
        "would run: FLOPs and bytes accessed (`cost_analysis`), HBM = arguments + outputs + "
        "temporaries - aliased (`memory_analysis`), roofline = max(FLOPs / peak, bytes / HBM "
        "bandwidth) with the chip's public figures (`benchmarks/tpu_compile/chips.py`); (c) "
        "compute-bound, (m) memory-bound. Setting: what was needed to fit (default: the "
        "config as it is). bfloat16 compute, so the AFC filter products run at one bfloat16 "
        "pass (`afc_jax.ops.filter_matrices.filter_precision`, measured in `benchmarks/README.md`, "
        '"TPU numerics"); pointwise layers and convolutions at `model.precision=None` '
        '(DEFAULT). The TPU\'s own "auto" choices throughout (native depthwise conv, matrix '
        "filters, NCHW fine grids).",
        "",
        "| model | topology | imgs/chip | setting | train TFLOP | train GB accessed | "
        "train HBM GB / cap | fits | roofline ms | eval HBM GB | eval fits | compile s | "
        "commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {key: i for i, key in enumerate(plan(None))}
    rows = sorted(results, key=lambda r: order.get((r["topology"], r["model"]), len(order)))
    lines += [_row(r) for r in rows]
    if failures:
        lines += ["", "Not compiled / not fitting:", ""]
        lines += [f"- {f['model']} on {f['topology']}: {f['reason']}" for f in failures]
    done = {(r["topology"], r["model"]) for r in results + failures}
    missing = [f"{m} on {t}" for t, m in plan(None) if (t, m) not in done]
    if missing:
        lines += ["", "Not compiled yet (run the sweep again to add them): " + ", ".join(missing)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _commit() -> str:
    """The checked-out commit (with "+dirty" when the tree has changes), for the row's record."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(  # changes outside the results this sweep writes
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":!benchmarks/results"], capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def run_one(topology: str, model: str, tmp: str, timeout: int) -> tuple[dict | None, str]:
    last = "not run"
    for setting in FIT_LADDER:
        cmd = [
            sys.executable, "-m", "benchmarks.tpu_compile", "--topology", topology,
            "--config", f"configs/imagenet.py:model={model}", *COMMON, *setting, "--json", tmp,
        ]  # fmt: skip
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"compile took over {timeout}s with setting {setting or 'default'}"
        print(f"{model} {topology} {setting}: rc {proc.returncode} in {time.time() - t0:.0f}s",
              flush=True)  # fmt: skip
        if proc.returncode not in (0, 1):
            return None, proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
        with open(tmp) as f:
            report = json.load(f)
        report["setting"] = " ".join(s.removeprefix("--config.") for s in setting)
        report["commit"] = _commit()
        if proc.returncode == 0:
            return report, ""
        last = f"does not fit even with {report['setting'] or 'default'}"
    return None, last


def _header(results: list[dict]) -> str:
    versions = results[0]["versions"] if results else {}
    return (
        f"Command: `python -m benchmarks.tpu_compile.sweep` (each row: `python -m "
        f"benchmarks.tpu_compile --topology T --config configs/imagenet.py:model=M "
        f"{' '.join(COMMON)} [setting]`). Versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + ". Compiled on a shared 2-core CPU host (compile times are that host's), "
        f"updated {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC."
    )


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--only", default=None, help="one topology")
    p.add_argument("--models", default=None, help="comma-separated models (default: all)")
    p.add_argument("--redo", action="store_true",
                   help="compile the selected rows again even if the JSON has them (replaced)")
    p.add_argument("--timeout", type=int, default=3600, help="per compile command, seconds")
    p.add_argument("--jobs", type=int, default=1,
                   help="compiles at once (each keeps ~1 core busy; mind the host's memory)")
    p.add_argument("--render", action="store_true", help="only rewrite the markdown")
    args = p.parse_args()
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def main() -> None:
    args = _parse_args()
    json_path = os.path.join(args.out, "tpu_compile.json")
    md_path = os.path.join(args.out, "tpu_compile.md")
    saved = json.load(open(json_path)) if os.path.exists(json_path) else {}
    results, failures = saved.get("results", []), saved.get("failures", [])
    notes = saved.get("notes", [])  # hand-written paragraphs, kept across reruns

    def render(header: str) -> None:
        write_markdown(results, failures, md_path, "\n\n".join([header, *notes]))

    if args.render:
        render(saved.get("header", ""))
        return
    selected = [
        (t, m) for t, m in plan(args.only) if args.models is None or m in args.models.split(",")
    ]
    done = set() if args.redo else {(r["topology"], r["model"]) for r in results + failures}
    todo = [key for key in selected if key not in done]
    # One scratch report per row, so parallel compiles never share a file.
    tmps = [os.path.join(args.out, f".tpu_compile_tmp.{i}.json") for i in range(len(todo))]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        running = {
            pool.submit(run_one, t, m, tmp, args.timeout): (t, m)
            for (t, m), tmp in zip(todo, tmps)
        }
        # Rows are recorded as they finish (in this thread only), so an interrupted sweep
        # keeps every finished row; a redone row replaces the old one only now.
        for future in concurrent.futures.as_completed(running):
            key = running[future]
            report, reason = future.result()
            results[:] = [r for r in results if (r["topology"], r["model"]) != key]
            failures[:] = [f for f in failures if (f["topology"], f["model"]) != key]
            if report is None:
                failures.append({"topology": key[0], "model": key[1], "reason": reason})
            else:
                results.append(report)
            header = _header(results)
            record = {"header": header, "notes": notes, "results": results, "failures": failures}
            with open(json_path, "w") as f:
                json.dump(record, f, indent=1)
            render(header)
    for tmp in tmps:
        if os.path.exists(tmp):
            os.remove(tmp)

if __name__ == "__main__":
    main()
