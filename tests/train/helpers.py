"""Helpers of the end-to-end training tests: the train.py command, its environment, runs.

Every subprocess gets one persistent JAX compilation cache per pytest session, so the many
restarts of the fault-injection tests load the compiled train step instead of compiling it
again (the executable is the same, so results stay bitwise identical), and XLA's CPU backend at
optimization level 0: a third less compile time and no slower steps for these tiny models.
Every run of the tests uses the same settings, so "bitwise identical to the reference" keeps
its meaning (the results differ from -O2 ones by float rounding, ~1e-7).
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL = "convnext_baseline_circular"  # compiles fastest; the loop does not depend on the family
_CACHE = os.environ.get("AFC_JAX_TEST_COMPILE_CACHE")  # set it to keep the cache across runs
if not _CACHE:
    _CACHE = tempfile.mkdtemp(prefix="afc_jax_compile_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


# Everything the tests' cost and assertions depend on is pinned here, so that tuning the demo
# config (configs/digits.py) does not change them: 32x32 digits, batch 64 (22 steps per epoch),
# 2 epochs = 44 steps, evaluation at the end of each epoch, no drop path.
PINNED = (
    "--config.batch_size=64",
    "--config.optim.base_batch_size=64",
    "--config.eval_batch_size=120",
    "--config.eval_every_steps=0",
    "--config.model.drop_path_rate=0.0",
    "--config.optim.ema_decay=0.99",
    "--config.num_epochs=2",
    "--config.log_every_steps=5",
    "--config.checkpoint_every_steps=8",
    "--config.checkpoint_keep=10",
    "--config.checkpoint_async=False",
)


def digits_config():
    """The same configuration in-process (for tests that build models or states)."""
    from configs import digits

    c = digits.get_config(f"model={MODEL},image_size=32")
    for flag in PINNED:
        key, value = flag[len("--config.") :].split("=")
        *parents, leaf = key.split(".")
        node = c
        for name in parents:
            node = node[name]
        node[leaf] = (
            type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"
        )
    return c


def command(workdir, data_dir, *extra):
    """The reference run's command (2 epochs of 22 steps on the digits); `extra` overrides."""
    return [
        sys.executable,
        str(REPO / "train.py"),
        f"--config={REPO / 'configs' / 'digits.py'}:model={MODEL},image_size=32",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *PINNED,
        *extra,
    ]


def env(devices=1, fault: str | None = None):
    e = dict(os.environ)
    e["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    )
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    e["PYTHONPATH"] = str(REPO)
    e["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    e.pop("AFC_JAX_FAULT", None)
    if fault:
        e["AFC_JAX_FAULT"] = fault
    return e


def run(workdir, data_dir, *extra, timeout=600, devices=1, fault=None, returncode=0) -> str:
    """Runs train.py to the end; checks the exit status; returns stdout + stderr."""
    proc = subprocess.run(
        command(workdir, data_dir, *extra),
        env=env(devices, fault),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == returncode, proc.stdout[-5000:]
    return proc.stdout


class Started:
    """A running train.py whose output is read by a thread, so every wait has a deadline even
    when the process prints nothing (a hung process fails the test instead of hanging it)."""

    def __init__(self, popen: subprocess.Popen):
        self.proc = popen
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def read_until(self, needle: str, timeout: float) -> str:
        """Output so far, once a line contains `needle`, the output ends, or `timeout` passes."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=min(1.0, max(0.01, deadline - time.time())))
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # keep the end marker for later readers
                break
            self.lines.append(line)
            if needle in line:
                break
        return "".join(self.lines)

    def finish(self, timeout: float) -> str:
        """Waits for the exit (killing the process after `timeout`); the whole output."""
        try:
            self.proc.wait(timeout)
        finally:
            stop(self.proc)
        self.read_until("\0", timeout=30)  # drain what is left
        return "".join(self.lines)

    @property
    def returncode(self):
        return self.proc.returncode

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)


def start(workdir, data_dir, *extra, devices=1, fault=None) -> Started:
    return Started(
        subprocess.Popen(
            command(workdir, data_dir, *extra),
            env=env(devices, fault),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(workdir, data_dir, *extra, fault=None) -> list[Started]:
    """The reference command as a 2-process run on 127.0.0.1 (process 0 is the coordinator)."""
    port = free_port()
    return [
        start(
            workdir,
            data_dir,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            *extra,
            fault=fault,
        )
        for i in range(2)
    ]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


_LOADED: dict = {}


def leaves(workdir, step=None):
    """The leaves of a checkpoint as numpy arrays (cached while the checkpoint is unchanged)."""
    from afc_jax.train.checkpointing import checkpoint_steps, load_raw_state

    if step is None:
        step = checkpoint_steps(str(workdir))[-1]
    step_dir = Path(workdir) / "checkpoints" / str(step)
    files = sorted(p for p in step_dir.rglob("*") if p.is_file())
    key = (str(step_dir), tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    if key not in _LOADED:
        state, _ = load_raw_state(str(workdir), step)
        _LOADED[key] = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    return _LOADED[key], step


def assert_bitwise_equal(workdir_a, workdir_b, step=None) -> None:
    """Params, EMA params, optimizer state and counters of two checkpoints are bitwise equal."""
    a, step_a = leaves(workdir_a, step)
    b, step_b = leaves(workdir_b, step)
    assert step_a == step_b
    assert len(a) == len(b) > 100
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
