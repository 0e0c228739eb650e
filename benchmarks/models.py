"""Whole-model benchmarks: eval and train-step throughput, compile time and XLA peak memory."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax import models
from benchmarks.timing import analysis, block, round_robin

# (label, registry family, create kwargs)
MODELS = (
    ("ConvNeXt-T", "convnext", {}),
    ("Baseline-T", "convnext_baseline_circular", {}),
    ("APS-T", "convnext_aps", {}),
    ("AFC-T reference/fft", "convnext_afc", dict(afc_formulation="reference", filter_impl="fft")),
    (
        "AFC-T reference/matrix",
        "convnext_afc",
        dict(afc_formulation="reference", filter_impl="matrix"),
    ),
    ("AFC-T fast/fft", "convnext_afc", dict(afc_formulation="fast", filter_impl="fft")),
    ("AFC-T fast/matrix", "convnext_afc", dict(afc_formulation="fast", filter_impl="matrix")),
    (
        "AFC-T fast/auto (default)",
        "convnext_afc",
        dict(afc_formulation="auto", filter_impl="auto"),
    ),
)
QUICK_MODELS = ("Baseline-T", "AFC-T fast/auto (default)")
BASELINE = "Baseline-T"
AFC_DEFAULT = "AFC-T fast/auto (default)"

TINY = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
QUICK = dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16))


def random_params(model, image_size: int, seed: int = 0):
    """Well-scaled random params from numpy (no initializer compilation): kernels
    N(0, 1/fan_in), biases N(0, 0.01), norm/poly scales 1, poly coefs at the official init,
    layer-scale and stem gains 0.1."""
    from afc_jax.layers.activations import DEFAULT_POLY_COEFFS

    x = jnp.zeros((1, image_size, image_size, model.in_chans), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = getattr(path[-1], "key", str(path[-1]))
        if name == "kernel":
            value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name == "bias":
            value = 0.01 * rng.standard_normal(leaf.shape)
        elif name in ("scale", "in_scale", "out_scale"):
            value = np.ones(leaf.shape)
        elif name == "coef":
            value = np.broadcast_to(np.asarray(DEFAULT_POLY_COEFFS), leaf.shape)
        elif name == "gamma":
            value = np.full(leaf.shape, 0.1)
        else:
            value = 0.01 * rng.standard_normal(leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(make, abstract)


def make_steps(model, lr: float = 1e-3):
    """eval: logits; train: jit(value_and_grad(cross-entropy) + SGD), params donated."""

    def eval_fn(params, images):
        return model.apply({"params": params}, images)

    def train_fn(params, images, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, images).astype(jnp.float32)
            logp = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return params, loss

    return eval_fn, train_fn


def bench_models(
    labels, *, batch: int, image_size: int, iters: int, quick: bool, log=print
) -> dict:
    sizes = QUICK if quick else TINY
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, image_size, image_size, 3)), jnp.float32)
    classes = 10 if quick else 1000
    targets = jnp.asarray(rng.integers(0, classes, batch), jnp.int32)
    table = {label: (family, kw) for label, family, kw in MODELS}
    results, steps, state = {}, {}, {}
    for label in labels:
        family, kw = table[label]
        model = models.create(family, num_classes=classes, **sizes, **kw)
        params = random_params(model, image_size)
        eval_fn, train_fn = make_steps(model)
        row = {"family": family, "options": kw, "batch": batch, "image_size": image_size}
        t0 = time.perf_counter()
        ev = jax.jit(eval_fn).lower(params, images).compile()
        row["eval"] = {"compile_s": time.perf_counter() - t0, **analysis(ev)}
        t0 = time.perf_counter()
        tr = jax.jit(train_fn, donate_argnums=0).lower(params, images, targets).compile()
        row["train"] = {"compile_s": time.perf_counter() - t0, **analysis(tr)}
        log(
            f"  compiled {label}: eval {row['eval']['compile_s']:.1f}s, "
            f"train {row['train']['compile_s']:.1f}s"
        )
        state[label] = [params]

        def run_eval(ev=ev, label=label):
            block(ev(state[label][0], images))

        def run_train(tr=tr, label=label):
            new, loss = tr(state[label][0], images, targets)
            block(loss)
            state[label][0] = new

        steps[(label, "eval")] = run_eval
        steps[(label, "train")] = run_train
        results[label] = row
    timed = round_robin(steps, iters, log=log)
    for (label, mode), t in timed.items():
        t["img_per_s"] = batch / t["median_s"]
        results[label][mode].update(t)
    return results


def ratios(results: dict, baseline: str = BASELINE) -> dict:
    """Time, memory and compile ratios of every model against the baseline (same run)."""
    base = results.get(baseline)
    if base is None:
        return {}
    out = {}
    for label, row in results.items():
        out[label] = {
            "eval_time": row["eval"]["median_s"] / base["eval"]["median_s"],
            "train_time": row["train"]["median_s"] / base["train"]["median_s"],
            "eval_cpu_time": row["eval"]["cpu_median_s"] / base["eval"]["cpu_median_s"],
            "train_cpu_time": row["train"]["cpu_median_s"] / base["train"]["cpu_median_s"],
        }
        if "peak_bytes" in row["train"] and "peak_bytes" in base["train"]:
            out[label]["train_peak_memory"] = (
                row["train"]["peak_bytes"] / base["train"]["peak_bytes"]
            )
    return out
