"""The training loop: wire data, model, optimizer, mesh and checkpoints together.

`train_and_evaluate(config, workdir)` trains (or resumes) a run in `workdir`:
- everything that can be checked before compiling is checked first (model name and size,
  image size, mesh vs devices, batch vs mesh, dataset presence, splits, class count, the first
  batch's labels);
- the state is created directly with its shardings, restored from the newest good checkpoint in
  `workdir/checkpoints` when there is one (same step, same schedule, same data order);
- progress lines with step rate, images/s and ETA; `metrics.jsonl` and TensorBoard scalars;
  periodic evaluation of the raw and EMA weights (top-1/top-5 over the whole eval split);
- periodic asynchronous checkpoints, keep-N, and a final checkpoint.

Faults (see README "Reliability"): SIGKILL anywhere loses at most the steps since the last
checkpoint and the resumed run is bitwise identical; SIGTERM writes a checkpoint at a step all
processes agree on and raises `Preempted` (exit 75); corrupt checkpoints are skipped; a
non-finite loss or gradient never updates the state and either stops the run
(`NonFiniteError`, exit 3) or is skipped and counted (`config.nonfinite`); a watchdog ends a run
that makes no progress for `config.watchdog_timeout_s` (exit 4).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from afc_jax import data, models
from afc_jax.train import checkpointing, faults, sharding
from afc_jax.train import workdir as workdirs
from afc_jax.train.logging import MetricWriter, Progress, log
from afc_jax.train.programs import build_programs
from afc_jax.train.state import TrainState

# Exit codes of train.py, so that schedulers can tell "retry" from "fix something".
CONFIG_EXIT_CODE = 2  # ConfigError / DataError / DatasetNotFoundError / CheckpointMismatchError
NONFINITE_EXIT_CODE = 3  # NonFiniteError: retrying would hit the same batch again
WATCHDOG_EXIT_CODE = 4  # no progress for watchdog_timeout_s: a host or device hung; retry
CHECKPOINT_EXIT_CODE = 74  # EX_IOERR: a checkpoint could not be written (disk full?); retry
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", distinct from crashes (1) and usage (2)
NONFINITE_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
    """The configuration cannot work; raised before any compilation."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint of `step` was written (or existed) and the run stopped."""

    def __init__(self, step: int, workdir: str, saved: bool = True):
        what = "written to" if saved else "already in"
        if step == 0:
            text = "preempted before the first step; nothing to save"
        else:
            text = f"preempted: checkpoint of step {step} {what} {workdir}/checkpoints"
        super().__init__(f"{text}; run the same command again to resume")
        self.step = step


class NonFiniteError(FloatingPointError):
    """config.nonfinite == "stop" and a step had a NaN/Inf loss or gradient."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class _PreemptionWatcher:
    """Turns SIGTERM into a stop at a step boundary that every process agrees on.

    One process: a Python SIGTERM handler sets a flag. Several: JAX's preemption sync manager
    (it catches SIGTERM itself, tells every process, and `reached_preemption_sync_point` turns
    True on all of them at the same step, without a device collective); without it, an
    allgather of the flags.
    """

    def __init__(self):
        import signal

        self.flag = False
        self._previous = None
        self._sync = None
        if jax.process_count() > 1:
            from jax._src import distributed

            self._sync = getattr(distributed.global_state, "preemption_sync_manager", None)
        if self._sync is not None:
            return  # its SIGTERM handler must stay in place
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. inside a notebook worker)
            self._previous = None

    def _handler(self, signum, frame):
        del signum, frame
        self.flag = True

    def should_stop(self, step: int) -> bool:
        """Call once per step, on every process, with the same (increasing) step."""
        if self._sync is not None:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(int(step)))
        if jax.process_count() == 1:
            return self.flag
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.flag, np.int32))
        return bool(np.any(flags))

    def close(self):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


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


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    """`models.from_config(config.model, num_classes)`, its errors as ConfigError."""
    try:
        return models.from_config(config.model, num_classes)
    except models.ModelConfigError as exc:
        raise ConfigError(str(exc)) from exc


def validate(config: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
    """Checks that need no compilation; raises ConfigError saying what to change."""
    try:
        models.parse_name(config.model.name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.name: {exc}") from exc
    build_model(config, max(int(config.data.num_classes), 1))  # depths/dims/dtype/impl fields
    size = config.data.image_size
    if size < models.TOTAL_STRIDE or size % models.TOTAL_STRIDE:
        raise ConfigError(
            f"data.image_size={size}: the models need a positive multiple of "
            f"{models.TOTAL_STRIDE} (e.g. {max(32, round(size / 32) * 32)})"
        )
    try:
        sharding.mesh_shape(config, num_devices)
    except sharding.MeshConfigError as exc:
        raise ConfigError(str(exc)) from exc
    accum = config.optim.grad_accum_steps
    if accum < 1:
        raise ConfigError(f"optim.grad_accum_steps must be >= 1, got {accum}")
    for name in ("batch_size", "eval_batch_size"):
        b = config[name]
        if b < 1 or b % num_devices or b % process_count:
            raise ConfigError(
                f"{name}={b} must be divisible by the {num_devices} devices (and "
                f"{process_count} processes) of the mesh; try "
                f"{max(1, b // num_devices) * num_devices}"
            )
    for name in ("num_epochs", "log_every_steps", "checkpoint_every_steps", "checkpoint_keep"):
        if config[name] < 1:
            raise ConfigError(f"{name} must be >= 1, got {config[name]}")
    if config.get("nonfinite", "stop") not in NONFINITE_POLICIES:
        raise ConfigError(
            f"nonfinite must be one of {NONFINITE_POLICIES}, got {config.get('nonfinite')!r}"
        )
    if config.get("watchdog_timeout_s", 0) < 0:
        raise ConfigError("watchdog_timeout_s must be >= 0 (0 disables the watchdog)")


def _save_config(config, workdir: str) -> None:
    if jax.process_index() != 0:
        return
    text = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    workdirs.write_text(os.path.join(workdir, "config.json"), text)


def evaluate(eval_step, params, eval_batches, mesh, *, watchdog=None, step=None) -> dict:
    """Top-1/top-5/loss over every real example of `eval_batches` (a re-iterable)."""
    totals = None
    for i, local in enumerate(eval_batches):
        batch = sharding.global_batch(local, mesh)
        out = eval_step(params, batch)
        totals = out if totals is None else jax.tree_util.tree_map(jnp.add, totals, out)
        if watchdog is not None:
            watchdog.progress(f"eval batch {i + 1} at step {step}")
        if i == 0 and step is not None:
            faults.maybe_kill("kill_in_eval", step)
    totals = jax.device_get(totals)
    n = max(float(totals["count"]), 1.0)
    skipped = getattr(getattr(eval_batches, "skipped", None), "count", 0)
    return {
        "top1": 100.0 * float(totals["top1"]) / n,
        "top5": 100.0 * float(totals["top5"]) / n,
        "loss": float(totals["loss"]) / n,
        "count": int(totals["count"]),
        "skipped": int(skipped),
    }


def _where(step: int, metrics: dict, steps_per_epoch: int) -> str:
    """Which step and batch a (host) metrics row belongs to, and what was not finite."""
    epoch, index = divmod(step - 1, steps_per_epoch)
    bad = np.flatnonzero(~np.asarray(metrics["example_finite"]))
    examples = (
        f"non-finite loss in example(s) {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''} "
        "of the global batch"
        if len(bad)
        else "every example's loss finite, the gradient not"
    )
    return (
        f"step {step} (epoch {epoch}, batch {index} of {steps_per_epoch} in the epoch; loss "
        f"{float(metrics['loss'])}, gradient norm {float(metrics['grad_norm'])}; {examples})"
    )


def _dump_batch(config, workdir: str, step: int, metrics: dict) -> str | None:
    """Writes this process's part of the batch of `step` (re-made: the order is deterministic)."""
    try:
        it = data.create_train_iterator(
            config,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            start_step=step - 1,
        )
        local = faults.maybe_poison(step, next(it))
        path = os.path.join(workdir, f"nonfinite_step{step}_process{jax.process_index()}.npz")
        workdirs.write_npz(
            path,
            step=step,
            image=local["image"],
            label=local["label"],
            mask=local["mask"],
            example_finite=np.asarray(metrics["example_finite"]),
            first_index=jax.process_index() * len(local["label"]),  # in the global batch
        )
        return path
    except Exception as exc:  # noqa: BLE001  (never hide the real error behind this one)
        print(f"could not save the batch of step {step}: {exc}", file=sys.stderr)
        return None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming if possible) and returns the last evaluation's metrics."""
    workdir = workdirs.resolve(workdir)  # absolute, or a gs:// URL kept as it is
    devices = jax.devices()
    validate(config, len(devices), jax.process_count())
    info = data.dataset_info(config)  # raises with instructions when the data is missing
    if info.num_classes != config.data.num_classes:
        log(f"note: dataset has {info.num_classes} classes (config said {config.data.num_classes})")
    steps_per_epoch = info.num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"batch_size={config.batch_size} exceeds the {info.num_train} training examples"
        )
    total_steps = int(config.num_epochs * steps_per_epoch)
    # Model, mesh, optimizer, shardings and steps: the same builder as benchmarks.tpu_compile.
    programs = build_programs(config, devices, info.num_classes, steps_per_epoch)
    mesh = programs.mesh
    policy = config.get("nonfinite", "stop")

    rng = jax.random.PRNGKey(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    abstract, state_sh = programs.abstract_state, programs.state_shardings

    watcher = _PreemptionWatcher()  # before the slow parts: a notice during them is not lost
    watchdog = Watchdog(config.get("watchdog_timeout_s", 0))
    checkpoints = checkpointing.TrainCheckpoints(
        workdir, keep=config.checkpoint_keep, async_save=config.checkpoint_async, log=log
    )
    writer = None
    failure = None
    last_eval: dict = {}
    try:
        try:
            state, restored_step = checkpoints.restore_latest(
                checkpointing.abstract_with_shardings(abstract, state_sh)
            )
        except checkpointing.CheckpointMismatchError as exc:
            raise ConfigError(str(exc)) from exc
        start_step = 0 if state is None else int(jax.device_get(state.step))

        # The first batch is read before anything is compiled: bad labels fail here.
        train_iter = data.create_train_iterator(
            config,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            start_step=start_step,
        )
        first_batch = next(train_iter) if start_step < total_steps else None
        # Built once; iterating it again starts a fresh pass over the eval split.
        eval_batches = data.create_eval_iterator(
            config, process_index=jax.process_index(), process_count=jax.process_count()
        )
        if state is None:
            state = programs.init_state(init_rng)
            log(f"{config.model.name}: new run in {workdir}")
        else:
            log(f"{config.model.name}: resumed from step {restored_step} in {workdir}")
        _save_config(config, workdir)
        n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract.params))
        log(
            f"{n_params:,} parameters; mesh {dict(mesh.shape)}; {jax.process_count()} "
            f"process(es); {steps_per_epoch} steps/epoch, {total_steps} steps, global batch "
            f"{config.batch_size}"
        )
        from afc_jax.train.optimizer import describe_run  # the effective recipe values

        log(describe_run(config, steps_per_epoch))

        train_step, eval_step = programs.train_step, programs.eval_step
        eval_every = config.eval_every_steps or steps_per_epoch

        def run_eval(step):
            raw = evaluate(
                eval_step, state.params, eval_batches, mesh, watchdog=watchdog, step=step
            )
            ema = evaluate(eval_step, state.ema_params, eval_batches, mesh, watchdog=watchdog)
            row = {
                "top1": raw["top1"],
                "top5": raw["top5"],
                "eval_loss": raw["loss"],
                "ema_top1": ema["top1"],
                "ema_top5": ema["top5"],
                "eval_count": raw["count"],
                "epoch": step / steps_per_epoch,
            }
            if raw["skipped"]:
                row["eval_skipped_images"] = raw["skipped"]
            return row

        writer = MetricWriter(workdir)
        progress = Progress(start_step, total_steps, config.batch_size)
        pending: list = []  # (step, device metrics) not yet fetched
        rows: list = []  # host metrics since the last progress line
        skipped_updates = int(jax.device_get(state.skipped_nonfinite))

        def drain():
            """Fetches pending metrics; acts on non-finite steps (before any save or eval)."""
            nonlocal pending, skipped_updates
            if not pending:
                return
            fetched = jax.device_get([m for _, m in pending])
            steps = [s for s, _ in pending]
            pending = []
            for s, m in zip(steps, fetched):
                if not bool(m["finite"]):
                    where = _where(s, m, steps_per_epoch)
                    if policy == "stop":
                        dump = _dump_batch(config, workdir, s, m)
                        latest = checkpoints.committed_steps()
                        kept = (
                            f"checkpoint {latest[-1]} (the newest, written before it) is good and "
                            "kept"
                            if latest
                            else "no checkpoint had been written yet"
                        )
                        saved = f" The batch is in {dump}." if dump else ""
                        raise NonFiniteError(
                            f"non-finite loss or gradient at {where}. The update was not applied; "
                            f"{kept} in {workdir}/checkpoints.{saved}"
                            " Resuming would meet the same batch again (the data order is "
                            "deterministic): lower optim.base_lr, set optim.grad_clip_norm, fix "
                            "the data, or set nonfinite='skip' to skip such updates.",
                            s,
                        )
                    skipped_updates += 1
                    log(
                        f"warning: skipped the update of {where}: nonfinite='skip' "
                        f"({skipped_updates} skipped so far)"
                    )
                rows.append(m)

        t_compile = time.time()
        step = start_step
        while step < total_steps:
            if watcher.should_stop(step):
                drain()
                saved = checkpoints.save(step, state) if step > 0 else False
                checkpoints.wait()
                raise Preempted(step, workdir, saved)
            local = first_batch if first_batch is not None else next(train_iter)
            first_batch = None
            batch = sharding.global_batch(faults.maybe_poison(step + 1, local), mesh)
            state, metrics = train_step(state, batch, step_rng)
            step += 1
            faults.maybe_kill("kill_in_step", step)
            pending.append((step, metrics))
            if step == start_step + 1:
                jax.block_until_ready(metrics)
                log(f"step {step}: first step compiled and ran in {time.time() - t_compile:.1f}s")
            watchdog.progress(f"step {step}")
            if step % config.log_every_steps == 0 or step == total_steps:
                drain()
                finite_losses = [float(m["loss"]) for m in rows if bool(m["finite"])]
                loss = float(np.mean(finite_losses)) if finite_losses else float("nan")
                text, rates = progress.line(step)
                row = {"loss": loss, "lr": float(rows[-1]["lr"]), **rates}
                row["grad_norm"] = float(rows[-1]["grad_norm"])
                if skipped_updates:
                    row["skipped_updates"] = skipped_updates
                    text += f", {skipped_updates} non-finite update(s) skipped"
                if train_iter.skipped.count:
                    row["skipped_images"] = train_iter.skipped.count
                    text += f", {train_iter.skipped.count} unreadable image(s) skipped"
                rows = []
                writer.write(step, row)
                log(f"step {step}/{total_steps}: loss {loss:.4f}, lr {row['lr']:.2e}, {text}")
            if step % eval_every == 0 or step == total_steps:
                drain()
                last_eval = run_eval(step)
                writer.write(step, last_eval)
                skipped = last_eval.get("eval_skipped_images", 0)
                log(
                    f"eval at step {step} (epoch {step / steps_per_epoch:.1f}, "
                    f"{last_eval['eval_count']} examples"
                    f"{f', {skipped} unreadable skipped' if skipped else ''}): top-1 "
                    f"{last_eval['top1']:.2f}%, top-5 {last_eval['top5']:.2f}%, EMA top-1 "
                    f"{last_eval['ema_top1']:.2f}%"
                )
            if step % config.checkpoint_every_steps == 0 and step < total_steps:
                drain()
                watchdog.progress(f"step {step}, saving checkpoint {step}")
                checkpoints.save(step, state)
                watchdog.progress(f"checkpoint {step}")
        drain()
        if step not in checkpoints.committed_steps():
            checkpoints.save(step, state)
        if not last_eval:  # resumed a finished run: report its evaluation again
            last_eval = run_eval(step)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        watchdog.close()
        watcher.close()
        expected = (Preempted, NonFiniteError, ConfigError, KeyboardInterrupt)
        # Another process may be dead: its barriers would only wait for it.
        abandon = (
            failure is not None and jax.process_count() > 1 and not isinstance(failure, expected)
        )
        try:
            checkpoints.close(abandon=abandon)
        except Exception as exc:
            if failure is None:
                raise
            print(f"while stopping: {checkpointing._describe(exc)}", file=sys.stderr)
        finally:
            if writer is not None:
                writer.close()
    log(f"done: checkpoints in {workdir}/checkpoints, metrics in {workdir}/metrics.jsonl")
    return {"step": step, **last_eval}


__all__ = [
    "CHECKPOINT_EXIT_CODE",
    "CONFIG_EXIT_CODE",
    "NONFINITE_EXIT_CODE",
    "PREEMPTED_EXIT_CODE",
    "WATCHDOG_EXIT_CODE",
    "ConfigError",
    "NonFiniteError",
    "Preempted",
    "TrainState",
    "Watchdog",
    "build_model",
    "train_and_evaluate",
    "validate",
]
