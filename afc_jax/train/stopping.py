"""Stopping a run safely: preemption notices (SIGTERM) and a watchdog for hangs.

A preemption notice leaves seconds to a few minutes. `PreemptionWatcher.should_stop` is asked at
every *agreement point* of the loop: after each train step and after each evaluation batch, the
same sequence on every process. Once a notice has arrived anywhere, it returns True on every
process at the same point, and the loop then saves the current step (an evaluation in progress
is abandoned, none is started) and exits. Public JAX APIs only:

- one process: a Python SIGTERM handler sets a flag, read at the next point;
- several processes with `jax.distributed` (its preemption service is on by default): the
  service catches SIGTERM itself (its handler is left in place), tells every process over the
  coordination service, and `multihost_utils.reached_preemption_sync_point(n)` turns True on
  all of them at the same point n (the furthest process's point + 1), without any device
  collective or host-device synchronisation;
- several processes without that service: the Python handler, and an all-gather of the flags
  at every point (one small collective each).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

WATCHDOG_EXIT_CODE = 4  # no progress for watchdog_timeout_s: a host or device hung; retry


class PreemptionWatcher:
    """Turns SIGTERM into a stop at an agreement point that every process agrees on.

    Create it before the slow parts of start-up (restore, compilation): a notice that arrives
    during them makes the first point stop. Call `should_stop(step)` at every point, on every
    process, in the same order; `close()` restores the previous SIGTERM handler.
    """

    def __init__(self):
        self.points = 0  # agreement points passed by this process
        self.flag = False  # this process received SIGTERM (Python handler modes)
        self.signal_step: int | None = None  # the step last reported when it arrived
        self._step: int | None = None
        self._previous = None
        self.mode = "local" if jax.process_count() == 1 else self._multi_process_mode()
        if self.mode != "service":  # the service's own handler must stay in place
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handler)
            except ValueError:  # not the main thread (e.g. a notebook worker)
                self._previous = None

    def _multi_process_mode(self) -> str:
        if not jax.distributed.is_initialized():
            return "allgather"
        try:  # point 0, passed by every process here
            multihost_utils.reached_preemption_sync_point(0)
        except RuntimeError:  # jax_enable_preemption_service is off
            return "allgather"
        return "service"

    def _handler(self, signum, frame):
        del signum, frame
        self.flag = True
        if self.signal_step is None:
            self.signal_step = self._step

    def should_stop(self, step: int | None = None) -> bool:
        """True at the same point on every process once any of them got a notice.

        `step`, the number of train steps done, is only for the messages (None: unchanged);
        the points themselves are counted here.
        """
        if step is not None:
            self._step = int(step)
        self.points += 1
        if self.mode == "service":
            return bool(multihost_utils.reached_preemption_sync_point(self.points))
        if self.mode == "local":
            return self.flag
        flags = multihost_utils.process_allgather(np.asarray(self.flag, np.int32))
        return bool(np.any(flags))

    def describe(self) -> str:
        """Where the notice arrived, as far as this process knows (for the stop message)."""
        if self.signal_step is not None:
            return f"SIGTERM received after step {self.signal_step}"
        if self.flag:
            return "SIGTERM received before the first step"
        return "another process received the notice"

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class Watchdog:
    """Ends the process when `progress()` is not called for `timeout_s` seconds.

    A hung collective (a host died without closing its sockets, a wedged accelerator or
    filesystem) otherwise blocks forever. Armed by the first `progress()` (so compilation is not
    timed); 0 disables it. The default action prints what was last reported, dumps every
    thread's stack to stderr and exits with WATCHDOG_EXIT_CODE (no cleanup: it is hung).
    """

    def __init__(self, timeout_s: float, on_timeout=None, poll_s: float | None = None):
        self.timeout_s = float(timeout_s or 0)
        self._on_timeout = on_timeout or self._exit
        self._last = None
        self._what = "start"
        self._stop = threading.Event()
        self._poll = poll_s or max(0.05, min(self.timeout_s / 4, 10.0))
        if self.timeout_s > 0:
            threading.Thread(target=self._run, name="afc-watchdog", daemon=True).start()

    def progress(self, what: str) -> None:
        self._what = what
        self._last = time.monotonic()

    def _run(self):
        while not self._stop.wait(self._poll):
            if self._last is not None and time.monotonic() - self._last > self.timeout_s:
                self._on_timeout(time.monotonic() - self._last, self._what)
                return

    def _exit(self, idle: float, what: str) -> None:
        # stderr directly: the process is about to end without cleanup, logging may be wedged.
        print(
            f"error: process {jax.process_index()}: no progress for {idle:.0f}s after {what} "
            f"(watchdog_timeout_s={self.timeout_s:g}); a host, device or filesystem is hung, or "
            "another process died. Exiting; run the same command again to resume from the "
            "newest checkpoint. Stacks of all threads follow.",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(WATCHDOG_EXIT_CODE)

    def close(self) -> None:
        self._stop.set()
