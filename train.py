"""Train a ConvNeXt/AFC model from a config; running the same command again resumes.

    python train.py --config configs/digits.py:model=convnext_afc --workdir runs/digits_afc
    python train.py --config configs/imagenet.py:model=convnext_afc_tiny --workdir DIR

Multi-host (Cloud TPU pods call jax.distributed.initialize() with no arguments; elsewhere pass
the coordinator): --coordinator_address=HOST:PORT --num_processes=N --process_id=I.

Exit codes: 0 done; 2 configuration or data error (fix and rerun); 3 non-finite loss or
gradient with nonfinite='stop'; 4 watchdog (no progress: hung host or device; rerun); 74 a
checkpoint could not be written (disk full?; rerun after fixing); 75 preempted (SIGTERM; rerun);
1 anything else, including another process of a multi-host run dying (this one then exits at
once instead of waiting for it).
"""

import os
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

from afc_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and config go")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: process count")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "call jax.distributed.initialize() (automatic on TPU pods)"
)
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s",
    100,
    "multi-host: a process that sends no heartbeat for this long is declared dead and every "
    "other process exits with an error (instead of waiting for it)",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    cli.quiet_logs(verbose=cli.verbosity_requested())  # -v 0 brings INFO lines back
    cli.show_progress_logs()  # the training loop's progress lines
    import jax

    cli.initialize_distributed(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        distributed=_DISTRIBUTED.value,
        heartbeat_timeout_s=_HEARTBEAT.value,
    )
    from afc_jax.data import DataError, DatasetNotFoundError
    from afc_jax.train import loop
    from afc_jax.train.checkpointing import CheckpointCorruptError, CheckpointSaveError

    try:
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (loop.ConfigError, DataError, DatasetNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(loop.CONFIG_EXIT_CODE)
    except loop.Preempted as exc:
        print(str(exc), file=sys.stderr, flush=True)
        sys.exit(loop.PREEMPTED_EXIT_CODE)
    except loop.NonFiniteError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(loop.NONFINITE_EXIT_CODE)
    except CheckpointSaveError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(loop.CHECKPOINT_EXIT_CODE)
    except CheckpointCorruptError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as exc:
        if jax.process_count() == 1:
            raise
        # Most likely another process died (a collective failed). Exit now: the normal exit
        # would wait in jax.distributed's shutdown barrier for the dead process.
        traceback.print_exc()
        print(
            f"error: process {jax.process_index()} of {jax.process_count()} stopped: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Another "
            "process has probably died (see its log); exiting without waiting for it. Run the "
            "same command on every host again to resume from the newest checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(1)


if __name__ == "__main__":
    app.run(main)
