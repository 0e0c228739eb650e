"""Train state and the jitted train/eval steps."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from afc_jax.data.mixing import mix_batch


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue exactly where it stopped."""

    step: jax.Array  # micro-steps taken (batches consumed)
    params: Any
    ema_params: Any
    opt_state: Any
    skipped_nonfinite: jax.Array  # updates dropped because the loss or gradient was NaN/Inf


def init_state(model, tx, rng, image_shape) -> TrainState:
    params = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        opt_state=tx.init(params),
        skipped_nonfinite=jnp.zeros((), jnp.int32),
    )


def _soft_targets(config, rng, batch, num_classes):
    a = config.augment
    return mix_batch(
        rng,
        batch["image"],
        batch["label"],
        num_classes=num_classes,
        mixup_alpha=a.mixup,
        cutmix_alpha=a.cutmix,
        mix_prob=a.mix_prob,
        switch_prob=a.switch_prob,
        label_smoothing=a.label_smoothing,
    )


def make_train_step(model, tx, schedule, config: ml_collections.ConfigDict, num_classes: int):
    """train_step(state, batch, base_rng) -> (state, metrics); pure, jit it with shardings.

    The step's randomness is `fold_in(base_rng, step)`, so a resumed run draws the same
    mixup/cutmix and drop-path noise as an uninterrupted one.

    `batch["mask"]` (optional, bool per example) weights the loss: examples the input pipeline
    could not decode have mask False and no weight. A step whose loss or gradient norm is not
    finite never changes the parameters, EMA or optimizer state (whatever `config.nonfinite`);
    it advances `step` and counts in `skipped_nonfinite`, and `metrics["finite"]` is False so the
    loop can stop ("stop") or go on ("skip"). `metrics["example_finite"]` says which examples'
    losses were finite (to name the culprits).
    """
    ema_decay = config.optim.ema_decay
    accum = config.optim.grad_accum_steps

    def train_step(state: TrainState, batch, base_rng):
        rng = jax.random.fold_in(base_rng, state.step)
        mix_rng, drop_rng = jax.random.split(rng)
        images, targets = _soft_targets(config, mix_rng, batch, num_classes)
        mask = batch.get("mask")
        weights = None if mask is None else mask.astype(jnp.float32)

        def loss_fn(params):
            logits = model.apply({"params": params}, images, train=True, rngs={"dropout": drop_rng})
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            per_example = -jnp.sum(targets * logp, axis=-1)
            if weights is None:
                return jnp.mean(per_example), per_example
            return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0), per_example

        (loss, per_example), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = jnp.sqrt(
            sum(
                jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree_util.tree_leaves(grads)
            )
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        # EMA follows real optimizer updates (every `accum` micro-steps).
        is_update = (state.step + 1) % accum == 0
        decay = jnp.where(is_update, ema_decay, 1.0)
        new_ema = jax.tree_util.tree_map(
            lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_params
        )
        new_state = TrainState(
            step=state.step + 1,
            params=new_params,
            ema_params=new_ema,
            opt_state=new_opt_state,
            skipped_nonfinite=state.skipped_nonfinite,
        )
        # Keep everything but the step counter when the update would be poisoned.
        kept = state.replace(step=state.step + 1, skipped_nonfinite=state.skipped_nonfinite + 1)
        new_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), new_state, kept
        )
        update_count = state.step // accum
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": schedule(update_count),
            "finite": finite,
            "example_finite": jnp.isfinite(per_example),
        }
        return new_state, metrics

    return train_step


def make_eval_step(model):
    """eval_step(params, batch) -> sums over the real (mask=True) examples of the batch."""

    def eval_step(params, batch):
        logits = model.apply({"params": params}, batch["image"]).astype(jnp.float32)
        labels = batch["label"]
        mask = batch["mask"].astype(jnp.float32)
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
        top5 = jax.lax.top_k(logits, 5)[1] if logits.shape[-1] >= 5 else None
        correct1 = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        correct5 = (
            jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32)
            if top5 is not None
            else jnp.ones_like(correct1)
        )
        return {
            "count": jnp.sum(mask),
            "loss": jnp.sum(loss * mask),
            "top1": jnp.sum(correct1 * mask),
            "top5": jnp.sum(correct5 * mask),
        }

    return eval_step
