"""The ablation ladder on the bundled digits: every rung between the circular baseline and AFC.

    python examples/ablation_ladder.py                       # CPU-sized: 6 epochs, 120 test images
    python examples/ablation_ladder.py --full                # the digits demo's 16 epochs, all 360
    python examples/ablation_ladder.py --rungs=convnext_afc,convnext_ideal_lpf_afln --epochs=2

Trains a nano ConvNeXt of each rung (`configs/digits.py`, 64x64 band-limited digits), then prints
one table: test accuracy (EMA), certified accuracy on the integer, half-pixel and fractional
shift grids and under crop shifts (`afc_jax.evaluation.run_shift_robustness`), and the aliasing
microscope's worst per-layer equivariance error on test images (`afc_jax.analysis`), with the
layer where it occurs. Writes WORKDIR/ladder.{json,md}, the shift-robustness reports under
WORKDIR/shift_robustness and the microscope's plots under WORKDIR/microscope. Running it again
resumes (finished runs are only re-evaluated).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from configs import digits

RUNGS = (
    "convnext_baseline_circular",
    "convnext_blurpool",
    "convnext_ideal_lpf",
    "convnext_ideal_lpf_afln",
    "convnext_afc_ln_c",
    "convnext_afc_poly1x",
    "convnext_afc_upgelu",
    "convnext_afc_nostem",
    "convnext_afc",
)

_WORKDIR = flags.DEFINE_string("workdir", "runs/ablation_ladder", "one sub-folder per rung")
_RUNGS = flags.DEFINE_list("rungs", list(RUNGS), "families to train, in table order")
_EPOCHS = flags.DEFINE_integer("epochs", 6, "training epochs (the digits demo: 16)")
_FULL = flags.DEFINE_bool("full", False, "the digits demo's setting: 16 epochs, whole test split")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 120, "test images evaluated (0: all 360)")
_MAX_SHIFT = flags.DEFINE_integer("max_shift", 4, "integer grid (max_shift-1)^2 + 1 shifts")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "digits are upsampled to this size")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR)")

COLUMNS = ("accuracy", "integer_grid", "half_pixel_grid", "fractional_grid", "crop_shift")


def rung_config(rung: str):
    config = digits.get_config(f"model={rung},image_size={_IMAGE_SIZE.value}")
    with config.unlocked():
        config.num_epochs = 16 if _FULL.value else _EPOCHS.value
        if _DATA_DIR.value:
            config.data.data_dir = _DATA_DIR.value
    return config


def train_all() -> dict[str, str]:
    from afc_jax.train import train_and_evaluate

    workdirs = {}
    for rung in _RUNGS.value:
        workdir = os.path.join(_WORKDIR.value, rung)
        t0 = time.time()
        print(f"\n=== training {rung} -> {workdir}", flush=True)
        final = train_and_evaluate(rung_config(rung), workdir)
        print(
            f"{rung}: EMA top-1 {final.get('ema_top1', float('nan')):.2f}% "
            f"[{time.time() - t0:.0f}s]",
            flush=True,
        )
        workdirs[rung] = workdir
    return workdirs


def shift_robustness(workdirs: dict[str, str]) -> dict:
    from afc_jax.evaluation import run_shift_robustness, with_eval_config

    config = with_eval_config(rung_config(next(iter(workdirs))))
    with config.unlocked():
        config.eval.max_shift = _MAX_SHIFT.value
        config.eval.crop_margin = 1
        config.eval.max_examples = 0 if _FULL.value else _EVAL_EXAMPLES.value
        config.eval.heatmap_examples = 0
        config.eval.protocols = COLUMNS
        config.eval.max_compactions = 0
        config.eval.progress = False
    out = os.path.join(_WORKDIR.value, "shift_robustness")
    print(f"\n=== shift robustness -> {out}", flush=True)
    report = run_shift_robustness(config, [f"{r}={w}" for r, w in workdirs.items()], out)
    return report["checkpoints"]


def microscope(workdirs: dict[str, str]) -> list[dict]:
    import numpy as np

    from afc_jax import data
    from afc_jax.analysis import examine
    from afc_jax.analysis.report import write_all
    from afc_jax.evaluation.loading import load_checkpoint

    config = rung_config(next(iter(workdirs)))
    with config.unlocked():
        config.eval_batch_size = 8
    images = np.asarray(next(iter(data.create_eval_iterator(config)))["image"][:4])
    reports, spectra = [], {}
    print("\n=== aliasing microscope (4 test images, EMA weights)", flush=True)
    for rung, workdir in workdirs.items():
        ck = load_checkpoint(workdir, rung_config(rung), 10, weights="ema")
        report, kept = examine(ck.model, ck.variables, images, keep_spectra=("s0.b0.act",))
        report["label"] = rung
        reports.append(report)
        spectra.update({(rung, layer): s for layer, s in kept.items()})
    write_all(reports, spectra, os.path.join(_WORKDIR.value, "microscope"))
    return reports


def table(shift: dict, reports: list[dict]) -> str:
    head = (
        "| rung | test top-1 | integer grid | half-pixel grid | fractional grid | crop shift "
        "| worst layer error (layer) |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in reports:
        entry = shift[r["label"]]
        cells = ["-" if entry.get(k) is None else f"{entry[k]:.1f}" for k in COLUMNS]
        worst = max(r["worst"].values(), key=lambda w: w["error"])
        lines.append(
            f"| {r['label']} | "
            + " | ".join(cells)
            + f" | {worst['error']:.1e} ({worst['layer']}) |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_RUNGS.value) - set(RUNGS))
    if unknown:
        raise app.UsageError(f"unknown rungs {unknown}; choose from {', '.join(RUNGS)}")
    from afc_jax import cli

    cli.quiet_logs(verbose=cli.verbosity_requested())  # -v 0 brings the libraries' INFO back
    cli.show_progress_logs()  # training and evaluation progress lines
    t0 = time.time()
    workdirs = train_all()
    shift = shift_robustness(workdirs)
    reports = microscope(workdirs)
    text = table(shift, reports)
    setting = (
        f"{16 if _FULL.value else _EPOCHS.value} epochs, {_IMAGE_SIZE.value}x"
        f"{_IMAGE_SIZE.value}, certified accuracy (%) on "
        f"{'all' if _FULL.value or not _EVAL_EXAMPLES.value else _EVAL_EXAMPLES.value} "
        "test images, worst layer: max over integer and half-pixel shifts"
    )
    print(f"\nAblation ladder ({setting}; {time.time() - t0:.0f}s)\n{text}")
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "ladder.md"), "w") as f:
        f.write(f"# Ablation ladder\n\n{setting}\n\n{text}\n")
    with open(os.path.join(_WORKDIR.value, "ladder.json"), "w") as f:
        json.dump(
            {"setting": setting, "shift_robustness": shift, "microscope": reports},
            f,
            indent=2,
            default=str,
        )
    print(f"plots: {os.path.join(_WORKDIR.value, 'microscope')}")


if __name__ == "__main__":
    app.run(main)
