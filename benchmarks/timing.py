"""Timing and memory helpers shared by the benchmark sections."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

WARMUP = 2


def block(tree):
    return jax.block_until_ready(tree)


def compile_fn(fn, *args, **jit_kw) -> tuple[Any, float, dict]:
    """jit + lower + compile; returns (compiled, seconds, {memory and flop analysis})."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, **jit_kw).lower(*args).compile()
    seconds = time.perf_counter() - t0
    return compiled, seconds, analysis(compiled)


def analysis(compiled) -> dict:
    """XLA's compiled memory analysis (bytes) and cost analysis (flops), where available.

    `peak_bytes` = temp + argument + output - alias: everything the executable holds at once
    (donated inputs alias outputs and are counted once). It is computed by XLA at compile time,
    so it does not depend on the machine's load.
    """
    out: dict[str, Any] = {}
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        mem = None
    if mem is not None:
        for field in (
            "temp_size_in_bytes",
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
        ):
            out[field] = int(getattr(mem, field, 0) or 0)
        out["peak_bytes"] = (
            out["temp_size_in_bytes"]
            + out["argument_size_in_bytes"]
            + out["output_size_in_bytes"]
            - out["alias_size_in_bytes"]
        )
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        if cost and "flops" in cost:
            out["flops"] = float(cost["flops"])
    except Exception:  # noqa: BLE001
        pass
    return out


def summarize(walls: Sequence[float], cpus: Sequence[float], warmup: int) -> dict:
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(cpus),
        "times_s": [round(t, 4) for t in walls],
        "iters": len(walls),
        "warmup": warmup,
    }


def round_robin(
    steps: dict[str, Callable[[], Any]], iters: int, warmup: int = WARMUP, log=None
) -> dict:
    """Times every step (a blocking callable) `warmup + iters` times, interleaved.

    Round r runs each step once, so slow drifts of the machine's load (a shared CPU) hit every
    step alike and ratios between them stay meaningful. Returns {key: summary}; the summary has
    the median wall time and the median process CPU time (all threads) per call.
    """
    walls: dict[str, list[float]] = {k: [] for k in steps}
    cpus: dict[str, list[float]] = {k: [] for k in steps}
    t_start = time.perf_counter()
    for r in range(warmup + iters):
        if log is not None:
            kind = "warm-up" if r < warmup else "timed"
            log(f"    round {r + 1}/{warmup + iters} ({kind}), "
                f"{time.perf_counter() - t_start:.0f} s elapsed, load {load_average()}")
        for key, step in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r >= warmup:
                walls[key].append(wall)
                cpus[key].append(cpu)
    return {k: summarize(walls[k], cpus[k], warmup) for k in steps}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
