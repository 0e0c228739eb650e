"""The ConvNeXt/AFC optimisation recipe in optax.

AdamW with a linear warm-up and cosine decay to `min_lr`, the peak learning rate scaled linearly
with the global batch size (the official script uses its lr as given; identical at the paper's
global batch of 4096, see README "Deviations from the official recipe"), weight decay by the
official rule (`weight_decay_mask`), optional global-norm clipping and gradient accumulation.
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
