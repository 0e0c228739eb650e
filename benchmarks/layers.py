"""Per-layer benchmarks: the AFC MLP at each stage's (size, channels) in each formulation and
filter implementation, and the model's other ideal filters (stem, downsampling layers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.layers.mlp import AliasFreeMLP, GeluMLP
from afc_jax.ops.filter_choice import IMPLEMENTATIONS
from afc_jax.ops.filters import ideal_downsample, ideal_lowpass
from benchmarks.timing import block, compile_fn, round_robin

STAGES = ((56, 96), (28, 192), (14, 384), (7, 768))
QUICK_STAGES = ((8, 8),)

# (label, AliasFreeMLP kwargs); None is the baseline's GELU MLP, for scale.
MLP_VARIANTS = (
    ("gelu (baseline MLP)", None),
    ("reference/fft", dict(formulation="reference", filter_impl="fft")),
    ("reference/matrix", dict(formulation="reference", filter_impl="matrix")),
    ("fast/fft", dict(formulation="fast", filter_impl="fft")),
    ("fast/matrix nchw", dict(formulation="fast", filter_impl="matrix", layout="nchw")),
    ("fast/matrix nhwc", dict(formulation="fast", filter_impl="matrix", layout="nhwc")),
    ("fast/auto (default)", dict(formulation="fast", filter_impl="auto")),
)
QUICK_MLP_VARIANTS = ("reference/fft", "fast/auto (default)")


def _params(module, x, seed=0):
    abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.1 * rng.standard_normal(a.shape) + (a.shape == (1,)), a.dtype),
        abstract,
    )


def bench_mlp(stages, batch: int, iters: int, variants, log=print) -> list:
    """Eval (forward) and train (forward + backward to params and input), per stage."""
    table = dict(MLP_VARIANTS)
    rows = []
    for size, channels in stages:
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.standard_normal((batch, size, size, channels)), jnp.float32)
        r = jnp.asarray(rng.standard_normal((batch, size, size, channels)), jnp.float32)
        steps, stage_rows = {}, {}
        for label in variants:
            kw = table[label]
            module = GeluMLP() if kw is None else AliasFreeMLP(**kw)
            params = _params(module, x)

            def fwd(p, x, module=module):
                return module.apply({"params": p}, x)

            def loss(p, x, r, module=module):
                # r is an argument, not a closed-over constant: XLA would otherwise fold the
                # backward of the last (linear) filter applied to it at compile time.
                return jnp.sum(module.apply({"params": p}, x) * r)

            row = {"size": size, "channels": channels, "batch": batch, "variant": label}
            for mode, fn, args in (
                ("eval", fwd, (params, x)),
                ("train", jax.grad(loss, argnums=(0, 1)), (params, x, r)),
            ):
                compiled, secs, info = compile_fn(fn, *args)
                row[mode] = {"compile_s": secs, **info}
                steps[(label, mode)] = lambda c=compiled, a=args: block(c(*a))
            stage_rows[label] = row
        for (label, mode), t in round_robin(steps, iters).items():
            stage_rows[label][mode].update(t)
        rows.extend(stage_rows.values())
        log(f"  MLP ({size}, {channels}) done")
    return rows


def filter_cases(quick: bool, batch: int):
    """(label, NHWC input shape, {impl: function}) for the model's other ideal filters."""
    if quick:
        stem, stages = (batch, 32, 32, 4), ((8, 8),)
    else:
        stem, stages = (batch, 224, 224, 96), ((56, 192), (28, 384), (14, 768))
    impls = IMPLEMENTATIONS
    # crop_spectrum: the FFT form the layers use when filter_impl is set (IdealBlurPool)
    lowpass = {i: (lambda x, i=i: ideal_lowpass(x, 0.75, impl=i)) for i in impls}
    down4 = {
        i: (lambda x, i=i: ideal_downsample(x, 4, impl=i, crop_spectrum=True)) for i in impls
    }
    cases = [("stem lowpass 0.75", stem, lowpass)]
    if not quick:
        # the fast stem filters the (N, H, W, 3) image instead (see afc_jax.models.convnext.Stem)
        cases.append(("stem image lowpass 0.75", stem[:3] + (3,), lowpass))
        cases.append(("stem downsample 4", stem, down4))
    for n, c in stages:
        fns = {
            i: (lambda x, i=i: ideal_downsample(x, 2, impl=i, crop_spectrum=True)) for i in impls
        }
        cases.append(("downsample 2", (batch, n, n, c), fns))
    return cases


def bench_filters(quick: bool, batch: int, iters: int, log=print) -> list:
    """Forward time of each filter by FFT and by matrices (what the choice rule is based on)."""
    rng = np.random.default_rng(2)
    rows, steps = {}, {}
    for label, shape, impls in filter_cases(quick, batch):
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        for impl, fn in impls.items():
            compiled, secs, info = compile_fn(fn, x)
            key = (label, tuple(shape), impl)
            rows[key] = {"filter": label, "shape": list(shape), "impl": impl, "compile_s": secs,
                         **info}
            steps[key] = lambda c=compiled, x=x: block(c(x))
    for key, t in round_robin(steps, iters).items():
        rows[key].update(t)
    log("  filters done")
    return list(rows.values())
