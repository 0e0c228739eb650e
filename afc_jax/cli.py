"""What the command-line entry points (train.py, eval.py, examples) share.

- `quiet_logs`: the console shows progress and results, not the INFO lines and deprecation
  notices of TensorFlow, TFDS and orbax. Call it before TensorFlow is imported. absl's own
  `--verbosity` flag (`-v 0` for INFO, `-v 1` for debug) turns the filtering off.
- `initialize_distributed`: `jax.distributed.initialize` from the multi-host flags.
- `show_progress_logs`: afc-jax's own INFO lines (e.g. evaluation's per-checkpoint progress)
  on the console as plain messages, however quiet the third-party libraries are.

Library code logs through `logging`/absl and never prints; entry points print.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from absl import logging as absl_logging

# Third-party log messages that a user cannot act on (prefixes of the message text). Anything
# else at WARNING or above, ours or theirs, stays visible.
NOISE = (
    "`FeatureConnector.dtype` is deprecated",  # TFDS, from inside its own reader
    "Variant folder ",  # TFDS, while a dataset is being prepared for the first time
    "Load dataset info from",  # TFDS (INFO)
    "Constructing tf.data.Dataset",  # TFDS (INFO)
    "Given directory is read only",  # orbax, reading a training run's checkpoint (eval.py)
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not message.startswith(NOISE)


def quiet_logs(verbose: bool = False) -> None:
    """Keep the console to progress, results and actionable warnings.

    Sets (unless already set by the user) TF_CPP_MIN_LOG_LEVEL=2 and TF_ENABLE_ONEDNN_OPTS=0:
    TensorFlow's C++ start-up banner ("oneDNN custom operations are on") is printed before its
    log level is read, and only turning the option off silences it; afc-jax uses TensorFlow for
    input pipelines only, where oneDNN's kernels make no measurable difference. Then, unless
    `verbose`, sets absl's verbosity to WARNING (orbax and TFDS log every checkpoint and file at
    INFO), drops the known non-actionable third-party messages of `NOISE`, and TFDS's
    preparation progress bars.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if verbose:
        return
    absl_logging.set_verbosity(absl_logging.WARNING)
    noise = _DropNoise()
    for name in ("absl", "tensorflow", "tensorflow_datasets", "orbax", "jax"):
        logging.getLogger(name).addFilter(noise)
    warnings.filterwarnings("ignore", message=r".*FeatureConnector\.dtype.* is deprecated")
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # ours (training lines, tqdm in evaluation) stay


class _PlainMessages(logging.Formatter):
    """INFO lines as the bare message; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class _ConsoleHandler(logging.StreamHandler):
    """The handler `show_progress_logs` installs (once) on the `afc_jax` logger."""


def show_progress_logs(stream=None) -> logging.Handler:
    """Shows the `afc_jax` loggers' INFO and above on `stream` (default stdout), plain.

    Library code logs progress at INFO through module loggers (`logging.getLogger(__name__)`)
    and never prints; entry points call this after `quiet_logs`, whose WARNING verbosity is
    for third-party libraries. The records do not also go to absl's handler (which would
    print them a second time, with its prefix). Calling it again changes nothing.
    """
    logger = logging.getLogger("afc_jax")
    for handler in logger.handlers:
        if isinstance(handler, _ConsoleHandler):
            return handler
    handler = _ConsoleHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(_PlainMessages())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def verbosity_requested() -> bool:
    """True when absl's `--verbosity`/`-v` flag was given on the command line."""
    from absl import flags

    return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present


def initialize_distributed(
    *,
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    distributed: bool,
    heartbeat_timeout_s: int | None = None,
) -> None:
    """`jax.distributed.initialize` for a multi-host run; nothing for a single process.

    `distributed=True` without a coordinator lets JAX find the cluster (Cloud TPU pods, SLURM);
    with `coordinator_address` the three values are passed on (CPU and GPU hosts). CPU-only
    multi-process runs need a collectives backend: gloo, unless one is configured.
    """
    if not (coordinator_address or distributed):
        return
    import jax

    kwargs = {}
    if coordinator_address:
        kwargs = dict(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # harmless on GPU/TPU
    if heartbeat_timeout_s is not None:
        kwargs["heartbeat_timeout_seconds"] = heartbeat_timeout_s
    jax.distributed.initialize(**kwargs)
