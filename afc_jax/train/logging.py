"""Metrics to a JSON-lines file and TensorBoard (process 0 only), and progress lines.

Progress goes to the `afc_jax.train` logger at INFO (entry points show it with
`afc_jax.cli.show_progress_logs`); the library itself never prints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax

from afc_jax.train.workdir import JsonLines

_log = logging.getLogger("afc_jax.train")


class MetricWriter:
    """Writes `metrics.jsonl` (one object per call, with `step`) and TensorBoard scalars."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self._tb = None
        if not self.enabled:
            return
        self._jsonl = JsonLines(os.path.join(workdir, "metrics.jsonl"))  # local or gs://
        if tensorboard:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it at write time)
                import tensorflow as tf

                self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
            except Exception as exc:  # TensorBoard is optional; metrics.jsonl is the record
                _log.warning("TensorBoard logging disabled: %s", exc)

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in scalars.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else str(v)
        self._jsonl.write(json.dumps(row))
        if self._tb is not None:
            import tensorflow as tf

            try:
                with self._tb.as_default(step=int(step)):
                    for k, v in scalars.items():
                        tf.summary.scalar(k, float(v))
                self._tb.flush()
            except Exception as exc:  # never let TensorBoard stop a run; metrics.jsonl has it
                _log.warning("TensorBoard logging disabled: %s", exc)
                self._tb = None

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


class Progress:
    """Step rate, images/s and ETA for console lines."""

    def __init__(self, start_step: int, total_steps: int, global_batch: int):
        self.start_step, self.total, self.batch = start_step, total_steps, global_batch
        self.t0 = time.time()
        self.last_t, self.last_step = self.t0, start_step

    def line(self, step: int) -> tuple[str, dict]:
        now = time.time()
        dt = max(now - self.last_t, 1e-9)
        rate = (step - self.last_step) / dt
        self.last_t, self.last_step = now, step
        overall = (step - self.start_step) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / overall if overall > 0 else float("inf")
        text = f"{rate:.2f} steps/s, {rate * self.batch:.1f} img/s, ETA {_fmt_seconds(eta)}"
        return text, {"steps_per_sec": rate, "images_per_sec": rate * self.batch}


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def log(msg: str) -> None:
    """A progress line (process 0 only)."""
    if jax.process_index() == 0:
        _log.info(msg)
