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
checkpoint and the resumed run is bitwise identical; SIGTERM writes a checkpoint at the next
step all processes agree on, starting or finishing no evaluation, and raises `Preempted` (exit
75; afc_jax/train/stopping.py); corrupt checkpoints are skipped; a
non-finite loss or gradient never updates the state and either stops the run
(`NonFiniteError`, exit 3) or is skipped and counted (`config.nonfinite`); a watchdog ends a run
that makes no progress for `config.watchdog_timeout_s` (exit 4).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from typing import Any

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
from afc_jax.train.stopping import WATCHDOG_EXIT_CODE, PreemptionWatcher, Watchdog

_log = logging.getLogger(__name__)

# Exit codes of train.py, so that schedulers can tell "retry" from "fix something".
CONFIG_EXIT_CODE = 2  # ConfigError / DataError / DatasetNotFoundError / CheckpointMismatchError
NONFINITE_EXIT_CODE = 3  # NonFiniteError: retrying would hit the same batch again
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


def evaluate(
    eval_step, params, eval_batches, mesh, *, watchdog=None, watcher=None, step=None
) -> dict | None:
    """Top-1/top-5/loss over every real example of `eval_batches` (a re-iterable).

    With a `watcher` (PreemptionWatcher), every batch is an agreement point: None when a
    preemption notice stops the evaluation part-way (on every process at the same batch).
    """
    totals = None
    for i, local in enumerate(eval_batches):
        batch = sharding.global_batch(local, mesh)
        out = eval_step(params, batch)
        totals = out if totals is None else jax.tree_util.tree_map(jnp.add, totals, out)
        if watchdog is not None:
            watchdog.progress(f"eval batch {i + 1} at step {step}")
        if i == 0 and step is not None:
            faults.maybe_kill("kill_in_eval", step)
            faults.maybe_signal("sigterm_in_eval", step)
        if watcher is not None and watcher.should_stop(step):
            return None
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
        _log.warning("could not save the batch of step %d: %s", step, exc)
        return None


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every phase of a run reads: configuration, sizes, random keys, programs."""

    config: ml_collections.ConfigDict
    workdir: str
    steps_per_epoch: int
    total_steps: int
    programs: Any  # afc_jax.train.programs.Programs: model, mesh, shardings, steps
    init_rng: jax.Array
    step_rng: jax.Array


def _prepare(config: ml_collections.ConfigDict, workdir: str) -> _Run:
    """Checks everything that needs no compilation, then builds (not compiles) the programs."""
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
    try:
        # Model, mesh, optimizer, shardings and steps: the same builder as benchmarks.tpu_compile.
        programs = build_programs(config, devices, info.num_classes, steps_per_epoch)
    except sharding.MeshConfigError as exc:  # e.g. mesh.slices against the devices' slices
        raise ConfigError(str(exc)) from exc
    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    return _Run(
        config=config,
        workdir=workdir,
        steps_per_epoch=steps_per_epoch,
        total_steps=int(config.num_epochs * steps_per_epoch),
        programs=programs,
        init_rng=init_rng,
        step_rng=step_rng,
    )


def _restore_or_init(run: _Run, checkpoints) -> tuple[TrainState, int, Any, Any, Any]:
    """(state, start step, train iterator, its first batch or None, eval batches).

    The newest good checkpoint's state, or a new one; the data positioned at its step. The
    first batch is read before anything is compiled, so bad labels fail early.
    """
    config, programs = run.config, run.programs
    abstract = checkpointing.abstract_with_shardings(
        programs.abstract_state, programs.state_shardings
    )
    try:
        state, restored_step = checkpoints.restore_latest(abstract)
    except checkpointing.CheckpointMismatchError as exc:
        raise ConfigError(str(exc)) from exc
    start_step = 0 if state is None else int(jax.device_get(state.step))
    where = dict(process_index=jax.process_index(), process_count=jax.process_count())
    train_iter = data.create_train_iterator(config, start_step=start_step, **where)
    first_batch = next(train_iter) if start_step < run.total_steps else None
    # Built once; iterating it again starts a fresh pass over the eval split.
    eval_batches = data.create_eval_iterator(config, **where)
    if state is None:
        state = programs.init_state(run.init_rng)
        log(f"{config.model.name}: new run in {run.workdir}")
    else:
        log(f"{config.model.name}: resumed from step {restored_step} in {run.workdir}")
    _save_config(config, run.workdir)
    leaves = jax.tree_util.tree_leaves(programs.abstract_state.params)
    log(
        f"{sum(int(np.prod(p.shape)) for p in leaves):,} parameters; mesh "
        f"{dict(programs.mesh.shape)}; {jax.process_count()} process(es); "
        f"{run.steps_per_epoch} steps/epoch, {run.total_steps} steps, global batch "
        f"{config.batch_size}"
    )
    from afc_jax.train.optimizer import describe_run  # the effective recipe values

    log(describe_run(config, run.steps_per_epoch))
    return state, start_step, train_iter, first_batch, eval_batches


class _StepMetrics:
    """The device metrics of dispatched steps, fetched in batches; the non-finite policy.

    Fetching is deferred (at log lines, evaluations and checkpoints) so the host does not wait
    for every step; a non-finite step is acted on when fetched, before any save or evaluation.
    """

    def __init__(self, run: _Run, checkpoints, skipped_updates: int):
        self.run, self.checkpoints = run, checkpoints
        self.policy = run.config.get("nonfinite", "stop")
        self.pending: list = []  # (step, device metrics) not yet fetched
        self.rows: list = []  # host metrics since the last progress line
        self.skipped_updates = skipped_updates

    def add(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))

    def drain(self) -> None:
        """Fetches pending metrics; raises NonFiniteError or counts a skipped update."""
        if not self.pending:
            return
        steps = [s for s, _ in self.pending]
        fetched = jax.device_get([m for _, m in self.pending])
        self.pending = []
        for s, m in zip(steps, fetched):
            if not bool(m["finite"]):
                self._nonfinite(s, m)
            self.rows.append(m)

    def _nonfinite(self, step: int, metrics: dict) -> None:
        run = self.run
        where = _where(step, metrics, run.steps_per_epoch)
        if self.policy == "stop":
            dump = _dump_batch(run.config, run.workdir, step, metrics)
            latest = self.checkpoints.committed_steps()
            kept = (
                f"checkpoint {latest[-1]} (the newest, written before it) is good and kept"
                if latest
                else "no checkpoint had been written yet"
            )
            saved = f" The batch is in {dump}." if dump else ""
            raise NonFiniteError(
                f"non-finite loss or gradient at {where}. The update was not applied; "
                f"{kept} in {run.workdir}/checkpoints.{saved}"
                " Resuming would meet the same batch again (the data order is "
                "deterministic): lower optim.base_lr, set optim.grad_clip_norm, fix "
                "the data, or set nonfinite='skip' to skip such updates.",
                step,
            )
        self.skipped_updates += 1
        log(
            f"warning: skipped the update of {where}: nonfinite='skip' "
            f"({self.skipped_updates} skipped so far)"
        )

    def take_rows(self) -> list:
        """The host metrics since the last call (drains first)."""
        self.drain()
        rows, self.rows = self.rows, []
        return rows


# A notice is acted on at host step boundaries; the host may dispatch at most this many steps
# ahead of the devices, so a stop (or a hang seen by the watchdog) is never far behind.
_MAX_STEPS_IN_FLIGHT = 2


class _Trainer:
    """The step loop, the evaluation and checkpoint schedule, and stopping on a notice."""

    def __init__(self, run: _Run, checkpoints, watcher, watchdog):
        self.run, self.checkpoints = run, checkpoints
        self.watcher, self.watchdog = watcher, watchdog
        (self.state, self.start_step, self.train_iter, self.first_batch, self.eval_batches) = (
            _restore_or_init(run, checkpoints)
        )
        self.metrics = _StepMetrics(
            run, checkpoints, int(jax.device_get(self.state.skipped_nonfinite))
        )
        self.writer = MetricWriter(run.workdir)
        self.progress = Progress(self.start_step, run.total_steps, run.config.batch_size)
        self.in_flight: collections.deque = collections.deque()
        self.last_eval: dict = {}
        self.t_compile = time.time()

    def train(self) -> int:
        """Runs the remaining steps; returns the last step (raises Preempted on a notice)."""
        run, config, total = self.run, self.run.config, self.run.total_steps
        eval_every = config.eval_every_steps or run.steps_per_epoch
        step = self.start_step
        self.t_compile = time.time()
        if self.watcher.should_stop(step):
            self._preempt(step)
        while step < total:
            step = self._step(step)
            if self.watcher.should_stop(step):
                self._preempt(step)
            if step % config.log_every_steps == 0 or step == total:
                self._log_progress(step)
            if step % eval_every == 0 or step == total:
                self._evaluate(step)
            if step % config.checkpoint_every_steps == 0 and step < total:
                self.metrics.drain()
                self.watchdog.progress(f"step {step}, saving checkpoint {step}")
                self.checkpoints.save(step, self.state)
                self.watchdog.progress(f"checkpoint {step}")
        self.metrics.drain()
        if step not in self.checkpoints.committed_steps():
            self.checkpoints.save(step, self.state)
        if not self.last_eval:  # resumed a finished run: report its evaluation again
            self._evaluate(step, write=False)
        return step

    def _step(self, step: int) -> int:
        """Dispatches one train step (asynchronously); returns the new step count."""
        local = self.first_batch if self.first_batch is not None else next(self.train_iter)
        self.first_batch = None
        batch = sharding.global_batch(faults.maybe_poison(step + 1, local), self.run.programs.mesh)
        self.state, metrics = self.run.programs.train_step(self.state, batch, self.run.step_rng)
        step += 1
        faults.maybe_kill("kill_in_step", step)
        faults.maybe_signal("sigterm_in_step", step)
        self.metrics.add(step, metrics)
        self.in_flight.append(metrics)
        if len(self.in_flight) > _MAX_STEPS_IN_FLIGHT:
            jax.block_until_ready(self.in_flight.popleft())
        if step == self.start_step + 1:
            jax.block_until_ready(metrics)
            log(f"step {step}: first step compiled and ran in {time.time() - self.t_compile:.1f}s")
        self.watchdog.progress(f"step {step}")
        return step

    def _log_progress(self, step: int) -> None:
        rows = self.metrics.take_rows()
        finite_losses = [float(m["loss"]) for m in rows if bool(m["finite"])]
        loss = float(np.mean(finite_losses)) if finite_losses else float("nan")
        text, rates = self.progress.line(step)
        row = {"loss": loss, "lr": float(rows[-1]["lr"]), **rates}
        row["grad_norm"] = float(rows[-1]["grad_norm"])
        skipped_updates = self.metrics.skipped_updates
        if skipped_updates:
            row["skipped_updates"] = skipped_updates
            text += f", {skipped_updates} non-finite update(s) skipped"
        if self.train_iter.skipped.count:
            row["skipped_images"] = self.train_iter.skipped.count
            text += f", {self.train_iter.skipped.count} unreadable image(s) skipped"
        self.writer.write(step, row)
        log(f"step {step}/{self.run.total_steps}: loss {loss:.4f}, lr {row['lr']:.2e}, {text}")

    def _evaluate(self, step: int, *, write: bool = True) -> None:
        """Raw and EMA weights over the whole eval split; a notice part-way stops the run.

        `write=False` (a finished run resumed) only keeps the result to return it."""
        self.metrics.drain()
        args = (self.run.programs.eval_step,)
        kw = dict(watchdog=self.watchdog, watcher=self.watcher)
        mesh = self.run.programs.mesh
        raw = evaluate(*args, self.state.params, self.eval_batches, mesh, step=step, **kw)
        if raw is not None:
            ema = evaluate(*args, self.state.ema_params, self.eval_batches, mesh, **kw)
        if raw is None or ema is None:
            self._preempt(step, during="the evaluation")
        row = {
            "top1": raw["top1"],
            "top5": raw["top5"],
            "eval_loss": raw["loss"],
            "ema_top1": ema["top1"],
            "ema_top5": ema["top5"],
            "eval_count": raw["count"],
            "epoch": step / self.run.steps_per_epoch,
        }
        if raw["skipped"]:
            row["eval_skipped_images"] = raw["skipped"]
        self.last_eval = row
        if not write:
            return
        self.writer.write(step, row)
        skipped = f", {raw['skipped']} unreadable skipped" if raw["skipped"] else ""
        log(
            f"eval at step {step} (epoch {step / self.run.steps_per_epoch:.1f}, "
            f"{raw['count']} examples{skipped}): top-1 {raw['top1']:.2f}%, top-5 "
            f"{raw['top5']:.2f}%, EMA top-1 {ema['top1']:.2f}%"
        )

    def _preempt(self, step: int, during: str = "training") -> None:
        """Saves `step` (every process agreed on it), skips any evaluation, raises Preempted."""
        self.metrics.drain()  # a non-finite step is never saved
        saved = self.checkpoints.save(step, self.state) if step > 0 else False
        self.checkpoints.wait()
        log(
            f"preemption notice ({self.watcher.describe()}): stopping {during} at step {step}, "
            "with no further evaluation"
        )
        raise Preempted(step, self.run.workdir, saved)


def _close(failure, watcher, watchdog, checkpoints, trainer) -> None:
    """Stops the helpers and waits for the last save, unless another process may be dead."""
    watchdog.close()
    watcher.close()
    expected = (Preempted, NonFiniteError, ConfigError, KeyboardInterrupt)
    # Another process may be dead: its barriers would only wait for it.
    abandon = failure is not None and jax.process_count() > 1 and not isinstance(failure, expected)
    try:
        checkpoints.close(abandon=abandon)
    except Exception as exc:
        if failure is None:
            raise
        _log.warning("while stopping: %s", checkpointing._describe(exc))
    finally:
        if trainer is not None:
            trainer.writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming if possible) and returns the last evaluation's metrics."""
    run = _prepare(config, workdir)
    watcher = PreemptionWatcher()  # before the slow parts: a notice during them is not lost
    watchdog = Watchdog(config.get("watchdog_timeout_s", 0))
    checkpoints = checkpointing.TrainCheckpoints(
        run.workdir, keep=config.checkpoint_keep, async_save=config.checkpoint_async, log=log
    )
    trainer = failure = None
    try:
        trainer = _Trainer(run, checkpoints, watcher, watchdog)
        step = trainer.train()
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _close(failure, watcher, watchdog, checkpoints, trainer)
    log(f"done: checkpoints in {run.workdir}/checkpoints, metrics in {run.workdir}/metrics.jsonl")
    return {"step": step, **trainer.last_eval}


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
