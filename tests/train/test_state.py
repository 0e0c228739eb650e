"""Train and eval steps: overfitting a batch, EMA math, masking, non-finite handling."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from afc_jax import models
from afc_jax.train import init_state, make_eval_step, make_optimizer, make_train_step
from configs import digits

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16))


def setup(model_name="convnext_baseline_circular", **overrides):
    c = digits.get_config(f"model={model_name}")
    c.unlock()
    c.optim.warmup_epochs = 0
    c.num_epochs = 50
    c.optim.ema_decay = 0.5
    c.optim.base_lr = 1e-2
    c.augment.label_smoothing = 0.0
    for k, v in overrides.items():
        c[k] = v
    model = models.create(model_name, num_classes=10, **NANO)
    tx, schedule = make_optimizer(c, steps_per_epoch=10)
    state = jax.jit(lambda r: init_state(model, tx, r, (32, 32, 3)))(jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(model, tx, schedule, c, num_classes=10))
    return c, model, state, step


@functools.cache
def shared_setup():
    """One compiled model/step for the tests that do not change the config."""
    return setup()


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(n, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 10, size=n).astype(np.int32),
    }


def test_tiny_model_overfits_a_small_batch():
    _, model, state, step = shared_setup()
    b = batch()
    losses = []
    for _ in range(60):
        state, metrics = step(state, b, jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    logits = model.apply({"params": state.params}, b["image"])
    assert float(jnp.mean(jnp.argmax(logits, -1) == b["label"])) == 1.0


def test_ema_update_math():
    _, _, state, step = shared_setup()
    new, _ = step(state, batch(), jax.random.PRNGKey(1))
    expected = jax.tree_util.tree_map(lambda e, p: 0.5 * e + 0.5 * p, state.ema_params, new.params)
    chex.assert_trees_all_close(new.ema_params, expected, rtol=1e-6, atol=1e-7)
    assert int(new.step) == 1


def test_eval_step_counts_only_masked_in_examples():
    _, model, state, _ = shared_setup()
    b = batch(8)
    b["mask"] = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    out = jax.jit(make_eval_step(model))(state.params, b)
    logits = model.apply({"params": state.params}, b["image"])
    correct = np.asarray(jnp.argmax(logits, -1)) == b["label"]
    assert float(out["count"]) == 5
    assert float(out["top1"]) == float(np.sum(correct & b["mask"]))
    assert float(out["top5"]) >= float(out["top1"])


def test_nonfinite_updates_are_skipped_and_counted_when_asked():
    _, _, state, step = setup(nonfinite="skip")
    bad = batch()
    bad["image"][0, 0, 0, 0] = np.nan
    new, metrics = step(state, bad, jax.random.PRNGKey(1))
    assert not bool(metrics["finite"])
    assert int(new.step) == 1 and int(new.skipped_nonfinite) == 1
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)


def test_gradient_accumulation_equals_one_batch_twice_the_size():
    """Two micro-batches of 16 with grad_accum_steps=2 update the weights exactly as one batch
    of 32 does (same effective batch, so the same learning rate)."""
    _, _, state, big_step = shared_setup()  # batch_size 32, no accumulation
    c, model, _, _ = setup(batch_size=16)
    c.optim.grad_accum_steps = 2
    tx, schedule = make_optimizer(c, steps_per_epoch=10)
    acc_state = jax.jit(lambda r: init_state(model, tx, r, (32, 32, 3)))(jax.random.PRNGKey(0))
    acc_step = jax.jit(make_train_step(model, tx, schedule, c, num_classes=10))
    halves = [batch(seed=1), batch(seed=2)]
    s1, _ = acc_step(acc_state, halves[0], jax.random.PRNGKey(1))
    chex.assert_trees_all_equal(s1.params, acc_state.params)  # the first only accumulates
    s2, _ = acc_step(s1, halves[1], jax.random.PRNGKey(1))
    whole = {k: np.concatenate([h[k] for h in halves]) for k in halves[0]}
    big, _ = big_step(state, whole, jax.random.PRNGKey(1))
    chex.assert_trees_all_close(s2.params, big.params, rtol=1e-5, atol=1e-6)
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), big.params, state.params)
    assert all(jax.tree_util.tree_leaves(changed))  # and the update did move every tensor
