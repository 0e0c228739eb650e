"""The report plots draw on standalone matplotlib Figures: no pyplot, no backend change."""

from __future__ import annotations

import sys

import matplotlib
import numpy as np

from afc_jax.evaluation import reporting


def _report():
    grid = {
        "per_shift_accuracy": np.linspace(90.0, 100.0, 9).reshape(3, 3).tolist(),
        "axes": {"dy": [0.5, 1.5, 2.5], "dx": [0.5, 1.5, 2.5]},
        "certified": 88.0,
        "heatmap_examples": 12,
    }
    stages = ["stage0", "stage1"]
    errors = {"mean": {"stage0": 1e-7, "stage1": 2e-7}, "max": {"stage0": 3e-7, "stage1": 5e-7}}
    equivariance = {
        "available": True,
        "stages": stages,
        "strides": {"stage0": 4, "stage1": 8},
        "integer": errors,
        "fractional": errors,
    }
    protocols = {"half_pixel_grid": grid, "feature_equivariance": equivariance}
    entry = {"name": "m", "protocols": protocols}
    return {"checkpoints": {"m": entry}}


def test_plots_keep_the_callers_backend_and_write_pngs(tmp_path):
    matplotlib.use("svg")  # a caller's choice that a plot must not override
    had_pyplot = "matplotlib.pyplot" in sys.modules
    report = _report()
    heat = reporting.plot_heatmaps(report, "half_pixel_grid", "half-pixel", tmp_path / "h.png")
    eq = reporting.plot_equivariance(report, tmp_path / "e.png")
    assert matplotlib.get_backend() == "svg"
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot  # pyplot never imported by us
    for path in (heat, eq):
        data = (tmp_path / path.name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
