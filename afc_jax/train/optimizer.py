"""The ConvNeXt/AFC optimisation recipe in optax.

AdamW with a linear warm-up and cosine decay to `min_lr`, the peak learning rate scaled linearly
with the global batch size, weight decay only on conv/linear kernels (not on biases, norm
parameters, layer-scale gammas or polynomial coefficients and scales), optional global-norm
clipping and gradient accumulation.
"""

from __future__ import annotations

import jax
import ml_collections
import optax


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
    """base_lr * batch_size / base_batch_size (the linear scaling rule)."""
    return config.optim.base_lr * config.batch_size / config.optim.base_batch_size


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Per optimizer update: 0 -> peak over the warm-up epochs, cosine to min_lr at the end.

    Steps are optimizer updates (after gradient accumulation).
    """
    updates_per_epoch = max(1, steps_per_epoch // config.optim.grad_accum_steps)
    total = max(1, int(config.num_epochs * updates_per_epoch))
    warmup = min(int(config.optim.warmup_epochs * updates_per_epoch), total - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_learning_rate(config),
        warmup_steps=warmup,
        decay_steps=total,
        end_value=config.optim.min_lr,
    )


def weight_decay_mask(params):
    """True for the leaves that get weight decay: conv and linear kernels only."""

    def decays(path, leaf):
        name = getattr(path[-1], "key", str(path[-1]))
        return name == "kernel" and leaf.ndim >= 2

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
