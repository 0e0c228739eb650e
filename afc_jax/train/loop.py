"""The training loop: wire data, model, optimizer, mesh and checkpoints together.

`train_and_evaluate(config, workdir)` trains (or resumes) a run in `workdir`:
- everything that can be checked before compiling is checked first (model name, image size,
  mesh vs devices, batch vs mesh, dataset presence);
- the state is created directly with its shardings, restored from the newest checkpoint in
  `workdir/checkpoints` when there is one (same step, same schedule, same data order);
- progress lines with step rate, images/s and ETA; `metrics.jsonl` and TensorBoard scalars;
  periodic evaluation of the raw and EMA weights (top-1/top-5 over the whole eval split);
- periodic asynchronous checkpoints, keep-N, and a final checkpoint.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from afc_jax import data, models
from afc_jax.train import checkpointing, sharding
from afc_jax.train.logging import MetricWriter, Progress, log
from afc_jax.train.optimizer import make_optimizer
from afc_jax.train.state import TrainState, init_state, make_eval_step, make_train_step

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", distinct from crashes (1) and usage (2)


class ConfigError(ValueError):
    """The configuration cannot work; raised before any compilation."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint of `step` was written and the run stopped."""

    def __init__(self, step: int, workdir: str):
        super().__init__(
            f"preempted: checkpoint of step {step} written to {workdir}/checkpoints; run the "
            "same command again to resume"
        )
        self.step = step


class _PreemptionWatcher:
    """Turns SIGTERM into a flag that every process agrees on at a step boundary."""

    def __init__(self):
        import signal

        self.flag = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. inside a notebook worker)
            self._previous = None

    def _handler(self, signum, frame):
        del signum, frame
        self.flag = True

    def should_stop(self) -> bool:
        if jax.process_count() == 1:
            return self.flag
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.flag, np.int32))
        return bool(np.any(flags))

    def close(self):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    m = config.model
    if m.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
    kwargs = dict(
        num_classes=num_classes,
        drop_path_rate=m.drop_path_rate,
        layer_scale_init=m.layer_scale_init,
        head_init_scale=m.head_init_scale,
        dtype=DTYPES[m.dtype],
        filter_rule=m.filter_rule,
    )
    if m.get("depths") is not None or m.get("dims") is not None:
        kwargs["depths"], kwargs["dims"] = tuple(m.depths), tuple(m.dims)
    try:
        return models.create(m.name, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from exc


def validate(config: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
    """Checks that need no compilation; raises ConfigError saying what to change."""
    models.parse_name(config.model.name)
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
        if b % num_devices or b % process_count:
            raise ConfigError(
                f"{name}={b} must be divisible by the {num_devices} devices (and "
                f"{process_count} processes) of the mesh; try "
                f"{max(1, b // num_devices) * num_devices}"
            )
    if config.get("nonfinite", "stop") not in ("stop", "skip"):
        raise ConfigError("nonfinite must be 'stop' or 'skip'")


def _save_config(config, workdir: str) -> None:
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def evaluate(eval_step, params, eval_batches, mesh) -> dict:
    """Top-1/top-5/loss over every real example of `eval_batches` (a re-iterable)."""
    totals = None
    for local in eval_batches:
        batch = sharding.global_batch(local, mesh)
        out = eval_step(params, batch)
        totals = out if totals is None else jax.tree_util.tree_map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    n = max(float(totals["count"]), 1.0)
    return {
        "top1": 100.0 * float(totals["top1"]) / n,
        "top5": 100.0 * float(totals["top5"]) / n,
        "loss": float(totals["loss"]) / n,
        "count": int(totals["count"]),
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming if possible) and returns the last evaluation's metrics."""
    workdir = os.path.abspath(workdir)
    devices = jax.devices()
    validate(config, len(devices), jax.process_count())
    info = data.dataset_info(config)  # raises with instructions when the data is missing
    if info.num_classes != config.data.num_classes:
        log(f"note: dataset has {info.num_classes} classes (config said {config.data.num_classes})")
    model = build_model(config, info.num_classes)
    mesh = sharding.make_mesh(config, devices)
    steps_per_epoch = info.num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"batch_size={config.batch_size} exceeds the {info.num_train} training examples"
        )
    total_steps = int(config.num_epochs * steps_per_epoch)
    tx, schedule = make_optimizer(config, steps_per_epoch)
    image_shape = (config.data.image_size, config.data.image_size, 3)

    rng = jax.random.PRNGKey(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    abstract = jax.eval_shape(lambda r: init_state(model, tx, r, image_shape), init_rng)
    state_sh = sharding.state_shardings(abstract, mesh, config.mesh.fsdp_min_size)

    manager = checkpointing.make_manager(
        workdir, keep=config.checkpoint_keep, async_save=config.checkpoint_async
    )
    state, restored_step = checkpointing.restore_latest(
        manager, checkpointing.abstract_with_shardings(abstract, state_sh)
    )
    if state is None:
        state = jax.jit(lambda r: init_state(model, tx, r, image_shape), out_shardings=state_sh)(
            init_rng
        )
        start_step = 0
        log(f"{config.model.name}: new run in {workdir}")
    else:
        start_step = int(jax.device_get(state.step))
        log(f"{config.model.name}: resumed from step {restored_step} in {workdir}")
    _save_config(config, workdir)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(abstract.params))
    log(
        f"{n_params:,} parameters; mesh {dict(mesh.shape)}; {jax.process_count()} process(es); "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps, global batch {config.batch_size}"
    )

    data_sh = sharding.batch_sharding(mesh)
    batch_spec = {"image": data_sh, "label": data_sh}
    train_step = jax.jit(
        make_train_step(model, tx, schedule, config, info.num_classes),
        in_shardings=(state_sh, batch_spec, sharding.replicated(mesh)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(make_eval_step(model))
    eval_every = config.eval_every_steps or steps_per_epoch

    # Built once; iterating it again starts a fresh pass over the eval split.
    eval_batches = data.create_eval_iterator(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )

    writer = MetricWriter(workdir)
    train_iter = data.create_train_iterator(
        config,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=start_step,
    )
    progress = Progress(start_step, total_steps, config.batch_size)
    last_eval: dict = {}
    pending = []
    t_compile = time.time()
    step = start_step
    watcher = _PreemptionWatcher()
    try:
        while step < total_steps:
            if watcher.should_stop():
                checkpointing.save(manager, step, state, force=True)
                manager.wait_until_finished()
                raise Preempted(step, workdir)
            batch = sharding.global_batch(next(train_iter), mesh)
            state, metrics = train_step(state, batch, step_rng)
            step += 1
            pending.append(metrics)
            if step == start_step + 1:
                jax.block_until_ready(metrics)
                log(f"step {step}: first step compiled and ran in {time.time() - t_compile:.1f}s")
            if step % config.log_every_steps == 0 or step == total_steps:
                host = jax.device_get(pending)
                pending = []
                if config.get("nonfinite", "stop") == "stop" and not all(m["finite"] for m in host):
                    bad = step - len(host) + next(i for i, m in enumerate(host) if not m["finite"])
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {bad + 1}; the last good checkpoint "
                        f"is kept in {workdir}/checkpoints (set nonfinite='skip' to skip such "
                        "updates instead)"
                    )
                loss = float(np.mean([m["loss"] for m in host]))
                text, rates = progress.line(step)
                row = {"loss": loss, "lr": float(host[-1]["lr"]), **rates}
                row["grad_norm"] = float(host[-1]["grad_norm"])
                writer.write(step, row)
                log(f"step {step}/{total_steps}: loss {loss:.4f}, lr {row['lr']:.2e}, {text}")
            if step % eval_every == 0 or step == total_steps:
                raw = evaluate(eval_step, state.params, eval_batches, mesh)
                ema = evaluate(eval_step, state.ema_params, eval_batches, mesh)
                last_eval = {
                    "top1": raw["top1"],
                    "top5": raw["top5"],
                    "eval_loss": raw["loss"],
                    "ema_top1": ema["top1"],
                    "ema_top5": ema["top5"],
                    "eval_count": raw["count"],
                    "epoch": step / steps_per_epoch,
                }
                writer.write(step, last_eval)
                log(
                    f"eval at step {step} (epoch {step / steps_per_epoch:.1f}, {raw['count']} "
                    f"examples): top-1 {raw['top1']:.2f}%, top-5 {raw['top5']:.2f}%, EMA top-1 "
                    f"{ema['top1']:.2f}%"
                )
            if step % config.checkpoint_every_steps == 0 and step < total_steps:
                checkpointing.save(manager, step, state)
        if manager.latest_step() != step:
            checkpointing.save(manager, step, state, force=True)
        if not last_eval:  # resumed a finished run: report its evaluation again
            raw = evaluate(eval_step, state.params, eval_batches, mesh)
            ema = evaluate(eval_step, state.ema_params, eval_batches, mesh)
            last_eval = {
                "top1": raw["top1"],
                "top5": raw["top5"],
                "eval_loss": raw["loss"],
                "ema_top1": ema["top1"],
                "ema_top5": ema["top5"],
                "eval_count": raw["count"],
                "epoch": step / steps_per_epoch,
            }
    finally:
        watcher.close()
        manager.wait_until_finished()
        manager.close()
        writer.close()
    log(f"done: checkpoints in {workdir}/checkpoints, metrics in {workdir}/metrics.jsonl")
    return {"step": step, **last_eval}


__all__ = [
    "PREEMPTED_EXIT_CODE",
    "ConfigError",
    "Preempted",
    "TrainState",
    "build_model",
    "train_and_evaluate",
    "validate",
]
