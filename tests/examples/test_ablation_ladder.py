"""The ladder demo's pattern at a CPU-sized scale: AFC is flat across the shift grids with
per-layer errors at float32 round-off; the circular baseline is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import REPO_ROOT

ROUND_OFF = 1e-5  # worst per-layer relative error of an exactly equivariant model
ALIASING = 1e-3  # an aliasing model's worst layer misses by far more


def test_ladder_demo_separates_afc_from_the_baseline(tmp_path):
    out = tmp_path / "ladder"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "examples" / "ablation_ladder.py"),
        f"--workdir={out}",
        "--rungs=convnext_baseline_circular,convnext_afc",
        "--epochs=1",
        "--image_size=32",
        "--eval_examples=24",
        "--max_shift=2",
        f"--data_dir={tmp_path / 'tfds'}",
    ]
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ablation ladder" in proc.stdout and "| convnext_afc |" in proc.stdout
    ladder = json.loads((out / "ladder.json").read_text())
    afc = ladder["shift_robustness"]["convnext_afc"]
    grids = [afc[k] for k in ("accuracy", "integer_grid", "half_pixel_grid", "fractional_grid")]
    assert max(grids) - min(grids) < 1e-9, grids  # certified invariant: the same on every grid
    worst = {r["label"]: max(w["error"] for w in r["worst"].values()) for r in ladder["microscope"]}
    assert worst["convnext_afc"] < ROUND_OFF, worst
    assert worst["convnext_baseline_circular"] > ALIASING, worst
