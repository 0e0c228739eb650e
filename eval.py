"""Shift-robustness evaluation: the paper's certified protocols, side by side.

    python eval.py --config configs/digits.py --checkpoint runs/digits_afc \
        --checkpoint runs/digits_baseline --workdir runs/digits_eval
    python eval.py --config configs/imagenet.py:model=convnext_afc_tiny \
        --checkpoint afc=convnext_afc_tiny.pth --workdir $OUT --config.eval.max_examples=1000

--checkpoint (repeat it; `label=path` names a row): a training workdir (or its
checkpoints/<step> folder; --weights=ema|raw), an afc-jax variables checkpoint, or an official
.pth (--config.model.name says the family and size). Protocol settings live in the config's
`eval` section (defaults: afc_jax/evaluation/settings.py), e.g. --config.eval.max_shift=8,
--config.eval.protocols="('accuracy','integer_grid')". Writes OUT/shift_robustness.json,
OUT/shift_robustness.md and PNG plots. Multi-host: the same flags as train.py.
"""

import sys

from absl import app, flags

from afc_jax import cli
from afc_jax.evaluation.settings import WEIGHTS, define_config_flag

_CONFIG = define_config_flag("config", "the training config file (eval settings: config.eval)")
_CHECKPOINTS = flags.DEFINE_multi_string(
    "checkpoint", None, "checkpoint to evaluate ([label=]path); repeat for several"
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "where the json, markdown and plots go (a directory or a gs:// URL)"
)
_WEIGHTS = flags.DEFINE_enum(
    "weights", None, list(WEIGHTS), "training checkpoints: EMA or raw weights (eval.weights)"
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: process count")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()")
flags.mark_flags_as_required(["config", "checkpoint", "workdir"])


def _known_errors() -> tuple[type[Exception], ...]:
    """Mistakes in the flags, config, checkpoints or data: one line and exit code 2 (anything
    else is a bug and keeps its traceback)."""
    from afc_jax import checkpoints, evaluation, models, parallel

    known = [
        evaluation.EvalConfigError,
        evaluation.CheckpointSpecError,
        evaluation.ModelMismatchError,
        models.ModelConfigError,
        parallel.MeshConfigError,
        checkpoints.CheckpointCorruptError,
        checkpoints.CheckpointFormatError,
        checkpoints.CheckpointNotFoundError,
        checkpoints.NoTrainingCheckpointError,
        checkpoints.StateDictMismatchError,
    ]
    data = sys.modules.get("afc_jax.data")  # only raised once imported; TensorFlow is slow
    if data is not None:
        known += [data.DataError, data.DatasetNotFoundError]
    return tuple(known)


def _print_summary(report) -> None:
    from afc_jax.evaluation import reporting

    print()
    print(reporting.table_text(report))
    for line in reporting.invariance_lines(report):
        print(line)
    print(f"wrote {', '.join(sorted(report['files'].values()))}")


def main(argv):
    del argv
    cli.quiet_logs(verbose=cli.verbosity_requested())  # -v 0 brings INFO lines back
    cli.show_progress_logs()  # per-checkpoint progress (tqdm bars go to stderr)
    cli.initialize_distributed(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        distributed=_DISTRIBUTED.value,
    )

    import jax

    from afc_jax.evaluation import run_shift_robustness

    config = _CONFIG.value
    if _WEIGHTS.value:
        with config.unlocked():
            config.eval.weights = _WEIGHTS.value
    try:
        report = run_shift_robustness(config, list(_CHECKPOINTS.value), _WORKDIR.value)
    except _known_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        _print_summary(report)


if __name__ == "__main__":
    app.run(main)
