"""`python -m benchmarks.run --quick` runs end to end and writes well-formed results.

Only the structure of the output files is checked: no timing assertions (the numbers of a
smoke test on tiny models mean nothing, and the CPU is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                  ""))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "benchmark.json").read_text())

    machine = res["machine"]
    for key in ("cpu_model", "cpu_count", "jax", "jaxlib", "xla_platform_version", "command",
                "date_utc", "load_average_start", "load_average_end"):
        assert key in machine, key
    assert machine["command"].startswith("python -m benchmarks.run")
    assert res["settings"]["quick"] is True and res["settings"]["warmup"] == 2

    assert {"Baseline-T", "AFC-T fast/auto (default)"} <= set(res["models"])
    for row in res["models"].values():
        for mode in ("eval", "train"):
            step = row[mode]
            for key in ("compile_s", "median_s", "cpu_median_s", "img_per_s", "peak_bytes",
                        "times_s"):
                assert key in step, (mode, key)
            assert step["iters"] == len(step["times_s"]) >= 1
            assert step["median_s"] > 0 and step["peak_bytes"] > 0
    ratios = res["ratios_vs_baseline"]
    assert ratios["Baseline-T"]["train_time"] == 1.0
    assert {"eval_time", "train_time", "train_peak_memory"} <= set(ratios["AFC-T fast/auto "
                                                                          "(default)"])
    assert [t["target"] for t in res["targets"]] == [
        "train_time_ratio", "eval_time_ratio", "train_img_per_s", "eval_img_per_s",
        "train_memory_ratio", "train_compile_s"]

    assert res["mlp"] and {"size", "channels", "variant", "eval", "train"} <= set(res["mlp"][0])
    assert {r["impl"] for r in res["filters"]} == {"fft", "matrix"}
    dtypes = {r["dtype"] for r in res["invariance"]}
    assert dtypes == {"float32", "bfloat16"}
    assert all("max_rel_change" in r and r["per_shift"] for r in res["invariance"])

    md = (tmp_path / "benchmark.md").read_text()
    for heading in ("# afc-jax benchmark results", "## Models", "## Targets",
                    "## AFC MLP per stage", "## Other ideal filters", "## Shift invariance"):
        assert heading in md, heading
    assert "python -m benchmarks.run --quick" in md
