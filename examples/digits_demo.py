"""The bundled demo: train AFC and the circular baseline on scikit-learn's digits.

    python examples/digits_demo.py [--workdir runs/digits] [--data_dir DIR] [-v 0]

Trains `configs/digits.py` for both families (a nano ConvNeXt at 64x64, images ideally
upsampled from 8x8 so they are band-limited), prints test accuracy and where the checkpoints
and logs are, then the shift-robustness table of both models. Running it again resumes
(finished runs are only re-evaluated). `-v 0` shows the libraries' INFO logs too.
"""

from __future__ import annotations

import os
import time

from absl import app, flags

from afc_jax import cli

FAMILIES = ("convnext_afc", "convnext_baseline_circular")
_WORKDIR = flags.DEFINE_string("workdir", "runs/digits", "one sub-folder per model")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR)")


def main(argv) -> int:
    del argv
    cli.quiet_logs(verbose=cli.verbosity_requested())
    cli.show_progress_logs()  # evaluation's per-checkpoint lines
    args = flags.FLAGS

    from afc_jax.train import train_and_evaluate
    from configs import digits

    results = []
    t_all = time.time()
    for family in FAMILIES:
        config = digits.get_config(f"model={family}")
        if args.data_dir:
            config.data.data_dir = args.data_dir
        workdir = os.path.join(args.workdir, family)
        t0 = time.time()
        print(f"\n=== {family} -> {workdir}")
        final = train_and_evaluate(config, workdir)
        results.append((family, final, time.time() - t0, workdir))

    print(f"\nDigits demo finished in {time.time() - t_all:.0f}s")
    print(f"{'model':28s} {'test top-1':>10s} {'EMA top-1':>10s} {'time':>7s}  workdir")
    for family, final, seconds, workdir in results:
        print(
            f"{family:28s} {final.get('top1', float('nan')):9.2f}% "
            f"{final.get('ema_top1', float('nan')):9.2f}% {seconds:6.0f}s  {workdir}"
        )
    print(
        "Checkpoints: <workdir>/checkpoints; metrics: <workdir>/metrics.jsonl and "
        "<workdir>/tensorboard; resolved config: <workdir>/config.json"
    )
    shift_robustness(args, [workdir for _, _, _, workdir in results])
    return 0


def shift_robustness(args, workdirs) -> dict:
    """The paper's shift-robustness table for the trained models (EMA weights), on the whole
    digits test set, plus heat maps and equivariance plots in <workdir>/shift_robustness."""
    from afc_jax.evaluation import reporting, run_shift_robustness, with_eval_config
    from configs import digits

    config = with_eval_config(digits.get_config())  # each run's config.json names its model
    if args.data_dir:
        config.data.data_dir = args.data_dir
    # A CPU-sized version of the paper's grids on the whole test split (eval.max_shift=64 is
    # every circular shift of a 64x64 image; python eval.py --config configs/digits.py
    # --checkpoint ... runs that). At 64x64 one pixel of the 8x8 digits is 8 pixels, so these
    # are all sub-pixel shifts of the original digits.
    # The paper's shift sets (eval.shift_sets="official"): integer grid (0, 0) plus every
    # 1 <= dy, dx < 4 (10 shifts), half-pixel grid -(d - 1/2) for 1 <= d < 4 (9 shifts).
    config.eval.max_shift = 4
    config.eval.crop_margin = 1  # crop shift: offsets 1..2 per axis, 4 windows of a 66x66 resize
    config.eval.heatmap_examples = 120  # these are classified at every shift (heat maps)
    # Every compiled shape costs about a minute of XLA time on 2 cores: one certified shape (no
    # compaction levels) and no per-stage equivariance plots or random shifts in the demo
    # (eval.py runs them all).
    config.eval.protocols = ("accuracy", "integer_grid", "half_pixel_grid", "fractional_grid",
                             "crop_shift")
    config.eval.max_compactions = 0
    out = os.path.join(args.workdir, "shift_robustness")
    t0 = time.time()
    print(f"\n=== shift robustness (certified accuracy, %) -> {out}")
    labelled = [f"{os.path.basename(w.rstrip(os.sep))}={w}" for w in workdirs]
    report = run_shift_robustness(config, labelled, out)
    print()
    print(reporting.table_text(report))
    print(f"(evaluated in {time.time() - t0:.0f}s; tables and plots in {out})")
    for name, entry in report["checkpoints"].items():
        keys = ("accuracy", "integer_grid", "half_pixel_grid", "fractional_grid")
        cols = [entry[k] for k in keys]
        if entry["certified_invariant"]:
            print(
                f"{name}: test accuracy = integer grid = half-pixel grid = fractional grid = "
                f"{cols[0]:.2f}%: certified invariant to integer and fractional circular shifts "
                "(crop shift moves content without wrap-around, so it may still differ)"
            )
        else:
            print(
                f"{name}: not shift invariant: {cols[0]:.2f}% unshifted, but only "
                f"{min(c for c in cols if c is not None):.2f}% over every shift of a grid"
            )
    return report


if __name__ == "__main__":
    app.run(main)
