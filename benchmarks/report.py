"""Target checks and the markdown report of a benchmark run."""

from __future__ import annotations

from benchmarks.models import AFC_DEFAULT, BASELINE

MiB = 2**20

# (key, description, limit, "max" or "min")
TARGETS = (
    ("train_time_ratio", "AFC-T train step time / baseline-T", 1.5, "max"),
    ("eval_time_ratio", "AFC-T eval time / baseline-T", 1.5, "max"),
    ("train_img_per_s", "AFC-T train img/s", 1.15, "min"),
    ("eval_img_per_s", "AFC-T eval img/s", 3.2, "min"),
    ("train_memory_ratio", "AFC-T peak train memory / baseline-T (XLA analysis)", 1.5, "max"),
    ("train_compile_s", "AFC-T train-step compile time (s)", 60.0, "max"),
)

# Quoted from the performance issue (official PyTorch models, PyTorch 2.13, 2 threads, batch 8,
# 224x224, float32, on a 2-core CPU of this kind; another run, so only the shape is comparable).
PYTORCH_REFERENCE = (
    ("ConvNeXt-T", 17.2, 4.29, "1.8 GB", "8.9"),
    ("Baseline-T (circular)", 13.1, 2.61, "2.3 GB", "10.4"),
    ("APS-T", 8.0, 2.32, "2.2 GB", ""),
    ("AFC-T (official)", 1.07, 0.38, "9.3 GB", "35.4 (+1.8 FFT)"),
)


def targets(results: dict, ratios: dict, quick: bool, afc: str = AFC_DEFAULT) -> list:
    """Checks the issue's targets for the default AFC-T against the baseline of the same run."""
    if afc not in results or BASELINE not in results:
        return []
    row, r = results[afc], ratios[afc]
    values = {
        "train_time_ratio": r["train_time"],
        "eval_time_ratio": r["eval_time"],
        "train_img_per_s": row["train"]["img_per_s"],
        "eval_img_per_s": row["eval"]["img_per_s"],
        "train_memory_ratio": r.get("train_peak_memory"),
        "train_compile_s": row["train"]["compile_s"],
    }
    out = []
    for key, desc, limit, kind in TARGETS:
        v = values[key]
        met = None if v is None else (v <= limit if kind == "max" else v >= limit)
        if quick:
            met = None  # tiny models: the numbers check the pipeline, not the targets
        out.append({"target": key, "description": desc, "value": v, "limit": limit,
                    "kind": kind, "met": met, "model": afc})
    return out


def _f(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _mib(b):
    return "–" if b is None else f"{b / MiB:,.0f}"


def markdown(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    lines = [
        "# afc-jax benchmark results",
        "",
        f"- command: `{m['command']}`" + (" (quick smoke test: numbers are meaningless)"
                                          if s["quick"] else ""),
        f"- date (UTC): {m['date_utc']}; total {res.get('total_seconds', 0):.0f} s",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_available']} available), "
        f"backend {m['backend']}; load average at start {m['load_average_start']}, "
        f"at end {m.get('load_average_end')}",
        f"- software: jax {m['jax']}, jaxlib {m['jaxlib']}, XLA {m['xla_platform_version']}, "
        f"flax {m['flax']}, numpy {m['numpy']}, Python {m['python']}",
        f"- settings: batch {s['batch']}, {s['image_size']}x{s['image_size']}, float32, "
        f"{s['warmup']} warm-up + median of {s['iters']} timed calls, steps interleaved "
        "round-robin; CPU ms = process CPU time (all threads) per call, robust to other load",
        "- memory: XLA compiled memory analysis, temp + argument + output - aliased (donated) "
        "bytes of the jitted step; not process RSS",
        "",
    ]
    if "models" in res:
        lines += [
            "## Models",
            "",
            "Train step = jit(value_and_grad(cross-entropy) + SGD update), params donated. "
            "Ratios are against Baseline-T from this run.",
            "",
            "| model | eval img/s | train img/s | eval ms (CPU ms) | train ms (CPU ms) | "
            "eval / base | train / base | train peak MiB | mem / base | compile eval / train s "
            "| XLA GFLOP/img eval / train |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ratios = res.get("ratios_vs_baseline", {})
        for label, row in res["models"].items():
            e, t = row["eval"], row["train"]
            r = ratios.get(label, {})
            b = row["batch"]
            gf = (f"{e.get('flops', 0) / b / 1e9:.1f} / {t.get('flops', 0) / b / 1e9:.1f}"
                  if "flops" in e else "–")
            lines.append(
                f"| {label} | {e['img_per_s']:.2f} | {t['img_per_s']:.2f} | "
                f"{e['median_s'] * 1e3:,.0f} ({e['cpu_median_s'] * 1e3:,.0f}) | "
                f"{t['median_s'] * 1e3:,.0f} ({t['cpu_median_s'] * 1e3:,.0f}) | "
                f"{_f(r.get('eval_time'))} | {_f(r.get('train_time'))} | "
                f"{_mib(t.get('peak_bytes'))} | {_f(r.get('train_peak_memory'))} | "
                f"{e['compile_s']:.1f} / {t['compile_s']:.1f} | {gf} |"
            )
        lines.append("")
    if res.get("targets"):
        lines += [
            "## Targets (default AFC-T vs Baseline-T, same run)",
            "",
            "| target | measured | limit | met |",
            "|---|---:|---:|:---:|",
        ]
        for t in res["targets"]:
            op = "<=" if t["kind"] == "max" else ">="
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['description']} | {_f(t['value'])} | {op} {t['limit']} | {met} |")
        lines.append("")
    if "mlp" in res:
        lines += [
            "## AFC MLP per stage",
            "",
            "One MLP (C -> 4C -> C) on a (batch, N, N, C) map. Train = forward + backward to "
            "params and input.",
            "",
            "| (N, C) | variant | eval ms (CPU ms) | train ms (CPU ms) | train peak MiB "
            "| XLA GFLOP eval / train |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for row in res["mlp"]:
            e, t = row["eval"], row["train"]
            gf = (f"{e.get('flops', 0) / 1e9:.1f} / {t.get('flops', 0) / 1e9:.1f}"
                  if "flops" in e else "–")
            lines.append(
                f"| ({row['size']}, {row['channels']}) | {row['variant']} | "
                f"{e['median_s'] * 1e3:,.1f} ({e['cpu_median_s'] * 1e3:,.1f}) | "
                f"{t['median_s'] * 1e3:,.1f} ({t['cpu_median_s'] * 1e3:,.1f}) | "
                f"{_mib(t.get('peak_bytes'))} | {gf} |"
            )
        lines.append("")
    if "filters" in res:
        lines += [
            "## Other ideal filters (forward)",
            "",
            "| filter | input (NHWC) | impl | ms (CPU ms) |",
            "|---|---|---|---:|",
        ]
        for row in res["filters"]:
            lines.append(
                f"| {row['filter']} | {tuple(row['shape'])} | {row['impl']} | "
                f"{row['median_s'] * 1e3:,.1f} ({row['cpu_median_s'] * 1e3:,.1f}) |"
            )
        lines.append("")
    if "invariance" in res:
        lines += [
            "## Shift invariance: float32 vs bfloat16 compute",
            "",
            "max |logits(shift(x)) - logits(x)| / max |logits(x)| over the shifts (dy, dx) "
            "listed, random weights, input (2, H, W, 3); bfloat16 = `dtype=jnp.bfloat16` "
            "(params and filters float32).",
            "",
            "| model | dtype | depths / dims | input | max rel. change | per shift | "
            "vs float32 logits |",
            "|---|---|---|---|---:|---|---:|",
        ]
        for row in res["invariance"]:
            per = ", ".join(f"({k}) {v:.1e}" for k, v in row["per_shift"].items())
            vs = row.get("rel_diff_vs_float32_logits")
            lines.append(
                f"| {row['model']} | {row['dtype']} | {row['depths']} / {row['dims']} | "
                f"{row['input'][1]}x{row['input'][2]} | {row['max_rel_change']:.1e} | {per} | "
                f"{'–' if vs is None else f'{vs:.1e}'} |"
            )
        lines.append("")
    lines += [
        "## For context: the official PyTorch models (numbers quoted in the issue)",
        "",
        "PyTorch 2.13, 2 threads, batch 8, 224x224, float32, another run on a 2-core CPU of this "
        "kind (load unknown): compare shapes and ratios, not absolute numbers.",
        "",
        "| model | eval img/s | train img/s | peak train memory | GFLOPs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ev, tr, mem, gf in PYTORCH_REFERENCE:
        lines.append(f"| {name} | {ev} | {tr} | {mem} | {gf} |")
    lines.append("")
    return "\n".join(lines)
