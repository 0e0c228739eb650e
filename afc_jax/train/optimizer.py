"""The ConvNeXt/AFC optimisation recipe in optax.

AdamW with a linear warm-up and cosine decay to `min_lr`, the peak learning rate scaled linearly
with the global batch size (the official script uses its lr as given; identical at the paper's
global batch of 4096, see README "Deviations from the official recipe"), weight decay by the
official rule (`weight_decay_mask`), optional global-norm clipping and gradient accumulation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def effective_batch_size(config: ml_collections.ConfigDict) -> int:
    """Examples per optimizer update: the global batch times the gradient-accumulation steps
    (the official batch_size x update_freq x GPUs)."""
    return int(config.batch_size) * int(config.optim.grad_accum_steps)


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
    """base_lr * effective batch / base_batch_size (the linear scaling rule; the official
    script takes its lr as given, which is the same at its batch of 4096: README "Deviations
    from the official recipe")."""
    return config.optim.base_lr * effective_batch_size(config) / config.optim.base_batch_size


def schedule_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, int, int]:
    """(optimizer updates per epoch, warm-up updates, total updates) for `steps_per_epoch`
    batches per epoch (an update every `grad_accum_steps` batches)."""
    updates_per_epoch = max(1, steps_per_epoch // config.optim.grad_accum_steps)
    total = max(1, int(config.num_epochs * updates_per_epoch))
    warmup = min(int(config.optim.warmup_epochs * updates_per_epoch), total - 1)
    return updates_per_epoch, warmup, total


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Per optimizer update i, the official schedule: during the W warm-up updates
    peak * i / (W - 1) (numpy linspace from 0 to peak, so the last warm-up update is at the
    peak), then min_lr + (peak - min_lr) (1 + cos(pi j / (T - W))) / 2 for j = i - W, until
    update T - 1 (held after that).

    Steps are optimizer updates (after gradient accumulation).
    """
    _, warmup, total = schedule_steps(config, steps_per_epoch)
    peak = peak_learning_rate(config)
    end = float(config.optim.min_lr)

    def schedule(step):
        i = jnp.minimum(jnp.asarray(step, jnp.float32), total - 1)
        ramp = peak * i / max(warmup - 1, 1)
        j = jnp.maximum(i - warmup, 0.0)
        # (1 + cos(pi x)) / 2 written as cos(pi x / 2)^2: no cancellation near the end
        cosine = end + (peak - end) * jnp.square(jnp.cos(0.5 * jnp.pi * j / (total - warmup)))
        return jnp.where(i < warmup, ramp, cosine)

    return schedule


def describe_run(config: ml_collections.ConfigDict, steps_per_epoch: int) -> str:
    """The effective values of a run, as the start of training logs them."""
    updates_per_epoch, warmup, total = schedule_steps(config, steps_per_epoch)
    accum = int(config.optim.grad_accum_steps)
    batch = f"global batch {effective_batch_size(config)}"
    if accum > 1:
        batch += f" ({config.batch_size} x {accum} accumulated)"
    clip = config.optim.grad_clip_norm
    return (
        f"effective run: {batch}, peak lr {peak_learning_rate(config):.6g} "
        f"(base_lr {config.optim.base_lr:g} at batch {config.optim.base_batch_size}), "
        f"{updates_per_epoch} steps/epoch, {warmup} warm-up steps, {total} total steps "
        f"({config.num_epochs:g} epochs), cosine to min_lr {config.optim.min_lr:g}, AdamW "
        f"betas ({config.optim.b1:g}, {config.optim.b2:g}) eps {config.optim.eps:g} weight decay "
        f"{config.optim.weight_decay:g}, EMA decay {config.optim.ema_decay:g}, "
        f"grad clip {'none' if not clip else f'{clip:g}'}"
    )


def weight_decay_mask(params):
    """True for the leaves that get weight decay, by the official ConvNeXt/AFC rule.

    The official optimizer decays every parameter with more than one dimension whose name does
    not end in `.bias`: conv and linear weights and the polynomial coefficients (`coef`, torch
    (C, 3, 1, 1), Flax (C, 3)); not biases, norm scales, layer-scale gammas, the stem residual
    gamma or the polynomial `in_scale`/`out_scale` (all one-dimensional). The rule is applied to
    the Flax leaves directly: every Flax parameter has more than one dimension exactly when its
    official counterpart does (conv (kh, kw, in, out) <-> (out, in, kh, kw), linear transposed,
    coef (C, 3) <-> (C, 3, 1, 1), the rest unchanged; tests/train/test_optimizer.py checks this
    for every family through the torch-name mapping), and Flax biases are the leaves named
    `bias`. So any family, size or future layer is covered by rule, not by a list of names.
    """

    def decays(path, leaf):
        name = getattr(path[-1], "key", getattr(path[-1], "name", str(path[-1])))
        return len(getattr(leaf, "shape", ())) > 1 and name != "bias"

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """(optax transformation, learning-rate schedule) for the config."""
    o = config.optim
    schedule = learning_rate_schedule(config, steps_per_epoch)
    parts = []
    if o.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    parts.append(
        optax.adamw(
            learning_rate=schedule,
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            mask=weight_decay_mask,
        )
    )
    tx = optax.chain(*parts)
    if o.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum_steps)
    return tx, schedule
