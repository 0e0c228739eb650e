"""Fault injection for the reliability tests; inert unless `AFC_JAX_FAULT` is set.

`AFC_JAX_FAULT` holds comma-separated `<point>@<step>` items (`<point>@<step>:p<i>` limits one
to process i). Each point is a single, deterministic place in the training loop:

    kill_in_step@N     SIGKILL right after step N is dispatched (its computation in flight)
    kill_in_save@N     SIGKILL while checkpoint N is being written: every file is in the
                       temporary directory, which is not yet renamed (committed)
    kill_after_save@N  SIGKILL right after checkpoint N is committed (before old ones are pruned)
    kill_in_eval@N     SIGKILL after the first eval batch of the evaluation at step N
    sigterm_in_step@N  SIGTERM (a preemption notice) right after step N is dispatched
    sigterm_in_eval@N  SIGTERM after the first eval batch of the evaluation at step N
    nan@N              the batch of step N gets NaN images (so loss and gradients are NaN)
    save_error@N       writing checkpoint N fails with OSError(ENOSPC) ("disk full") just
                       before its commit

A kill is a real `SIGKILL` of the process by itself: nothing runs after it (no `finally`, no
atexit, no flush), exactly as when the OOM killer or a scheduler kills the job. A notice is a
real `SIGTERM` to itself, caught by whatever handler is installed (Python's or JAX's
preemption service), at an exactly known step.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys

ENV = "AFC_JAX_FAULT"
POINTS = (
    "kill_in_step",
    "kill_in_save",
    "kill_after_save",
    "kill_in_eval",
    "sigterm_in_step",
    "sigterm_in_eval",
    "nan",
    "save_error",
)


@functools.cache
def _parse(spec: str) -> frozenset[tuple[str, int, int | None]]:
    items = set()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, at, rest = item.partition("@")
        step, _, proc = rest.partition(":p")
        if point not in POINTS or not at or not step.isdigit() or (proc and not proc.isdigit()):
            raise ValueError(
                f"{ENV}: bad item {item!r}; expected <point>@<step>[:p<process>] "
                f"with a point among {POINTS}"
            )
        items.add((point, int(step), int(proc) if proc else None))
    return frozenset(items)


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def active(point: str, step: int) -> bool:
    spec = os.environ.get(ENV)
    if not spec:
        return False
    for p, s, proc in _parse(spec):
        if p == point and s == int(step):
            if proc is None:
                return True
            import jax

            return jax.process_index() == proc
    return False


def maybe_kill(point: str, step: int) -> None:
    if active(point, step):
        # stderr directly (not logging): the very next line kills the process.
        print(f"[fault injection] SIGKILL at {point}@{step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_signal(point: str, step: int) -> None:
    """`sigterm_in_*@step`: a real SIGTERM to this process (a preemption notice)."""
    if active(point, step):
        print(f"[fault injection] SIGTERM at {point}@{step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


def maybe_poison(step: int, batch: dict) -> dict:
    """`nan@step`: the images of the batch of (1-based) step `step` become NaN."""
    if active("nan", step):
        import numpy as np

        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
    return batch


def maybe_fail_save(step: int) -> None:
    if active("save_error", step):
        raise OSError(errno.ENOSPC, f"[fault injection] no space left writing checkpoint {step}")


def temporary_path_class():
    """An orbax TemporaryPath that injects kill_in_save / kill_after_save, or None (default)."""
    if not enabled():
        return None
    from orbax.checkpoint._src.path import atomicity

    class FaultInjectingTemporaryPath(atomicity.AtomicRenameTemporaryPath):
        async def finalize(self, *args, **kwargs):
            final = self.get_final()
            step = final.name
            is_step = step.isdigit()  # item folders ("default") are finalized inside the step
            if is_step:
                maybe_kill("kill_in_save", int(step))
                maybe_fail_save(int(step))
            await super().finalize(*args, **kwargs)
            if is_step:
                maybe_kill("kill_after_save", int(step))

    return FaultInjectingTemporaryPath
