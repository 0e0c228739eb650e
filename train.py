"""Train a ConvNeXt/AFC model from a config; running the same command again resumes.

    python train.py --config configs/digits.py:model=convnext_afc --workdir runs/digits_afc
    python train.py --config configs/imagenet.py:model=convnext_afc_tiny --workdir DIR

Multi-host (Cloud TPU pods call jax.distributed.initialize() with no arguments; elsewhere pass
the coordinator): --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and config go")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host: HOST:PORT")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: process count")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "call jax.distributed.initialize() (automatic on TPU pods)"
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax/TFDS info lines drown the progress
    import jax

    if _COORDINATOR.value or _DISTRIBUTED.value:
        kwargs = {}
        if _COORDINATOR.value:
            kwargs = dict(
                coordinator_address=_COORDINATOR.value,
                num_processes=_NUM_PROCESSES.value,
                process_id=_PROCESS_ID.value,
            )
        if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
            # CPU-only multi-process runs need a collectives backend; harmless on GPU/TPU.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kwargs)
    from afc_jax.data import DatasetNotFoundError
    from afc_jax.train.loop import PREEMPTED_EXIT_CODE, ConfigError, Preempted, train_and_evaluate

    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, DatasetNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Preempted as exc:
        print(str(exc), file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    app.run(main)
