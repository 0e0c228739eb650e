"""Shift invariance of AFC logits in float32 and bfloat16 compute (filters stay float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax import models, ops
from benchmarks.models import random_params

SHIFTS = ((0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (-1.5, 2.5), (0.25, -0.75))
NANO = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64))
QUICK = dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16))

CASES = (
    ("AFC fast/auto", "convnext_afc", dict(afc_formulation="auto", filter_impl="auto")),
    ("AFC reference/fft", "convnext_afc", dict(afc_formulation="reference", filter_impl="fft")),
    ("Baseline (aliasing, for scale)", "convnext_baseline_circular", {}),
)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def bench_invariance(quick: bool, log=print) -> list:
    """Max over SHIFTS of max|logits(shift(x)) - logits(x)| / max|logits(x)|, per dtype."""
    size = 32 if quick else 64
    sizes = QUICK if quick else NANO
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, size, size, 3)), jnp.float32)
    rows = []
    for label, family, kw in CASES[:1] if quick else CASES:
        for dtype in (jnp.float32, jnp.bfloat16):
            model = models.create(family, num_classes=10, dtype=dtype, **sizes, **kw)
            params = random_params(model, size, seed=5)

            @jax.jit
            def logits(p, x, d, model=model):
                return model.apply({"params": p}, ops.fractional_shift(x, (d[0], d[1])))

            ref = logits(params, x, jnp.zeros(2, jnp.float32))
            errs = {
                f"{dy:+g},{dx:+g}": _rel(logits(params, x, jnp.asarray([dy, dx], jnp.float32)), ref)
                for dy, dx in SHIFTS
            }
            row = {
                "model": label,
                "options": kw,
                "dtype": jnp.dtype(dtype).name,
                "input": [2, size, size, 3],
                "dims": list(sizes["dims"]),
                "depths": list(sizes["depths"]),
                "per_shift": errs,
                "max_rel_change": max(errs.values()),
            }
            if dtype == jnp.bfloat16:
                f32 = next(r for r in rows if r["model"] == label and r["dtype"] == "float32")
                row["rel_diff_vs_float32_logits"] = _rel(ref, f32["_ref"])
            row["_ref"] = np.asarray(ref, np.float32)
            rows.append(row)
    for r in rows:
        r.pop("_ref")
    log("  invariance done")
    return rows
