"""TPU matmul precision, emulated on the CPU: AFC's logit change under shifts per policy.

    python -m benchmarks.tpu_precision [--size 64] [--model nano|tiny] [--out DIR]

A TPU computes a float32 matmul or convolution as bfloat16 passes (issue 12, item 4): each
operand is split into bfloat16 parts a = a1 + a2 + a3 (a1 = bf16(a), a2 = bf16(a - a1), ...)
and the products of the parts are summed in float32: DEFAULT = 1 pass (a1 b1), HIGH = 3 passes
(a1 b1 + a1 b2 + a2 b1), HIGHEST = 6 passes (+ a1 b3 + a2 b2 + a3 b1). Products of bfloat16
numbers are exact in float32, so evaluating exactly these products in float32 on the CPU
reproduces the TPU's rounding (up to the order of the float32 accumulation).

The model's program is traced to a jaxpr and evaluated with every `dot_general` /
`conv_general_dilated` replaced by its emulation, per part of the network: "dft" (the AFC
filter matrices: the products afc_jax.ops.filter_matrices issues with an explicit precision),
"pointwise" (the other dot_generals: 1x1 convs and the head), "conv" (the convolutions:
depthwise 7x7, stem and downsampling convs). FFT filters are not emulated (FFTs ignore the
precision; the TPU runs them as float32 products at HIGHEST, `benchmarks.tpu_compile` reports
it).

The metric is the README's: max over the shifts of max|logits(shift(x)) - logits(x)| /
max|logits(x)|, with `benchmarks.models.random_params` weights (well scaled, random).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from afc_jax import models, ops
from afc_jax.ops import filter_matrices
from afc_jax.ops.platform import targeting
from benchmarks.models import random_params

PASSES = {"DEFAULT": 1, "HIGH": 3, "HIGHEST": 6, "exact": 0}
_PAIRS = {1: ((0, 0),), 3: ((0, 0), (0, 1), (1, 0)),
          6: ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))}  # fmt: skip
SHIFTS = (("integer (1, 0)", (1.0, 0.0)), ("integer (0, 1)", (0.0, 1.0)),
          ("half (0.5, 0)", (0.5, 0.0)), ("half (0.5, 0.5)", (0.5, 0.5)))  # fmt: skip


def _split(x, parts: int):
    out, rest = [], x.astype(jnp.float32)
    for _ in range(parts):
        hi = rest.astype(jnp.bfloat16).astype(jnp.float32)
        out.append(hi)
        rest = rest - hi
    return out


def _emulated(prim, passes: int, a, b, params):
    if passes == 0 or a.dtype != jnp.float32 or b.dtype != jnp.float32:
        return prim.bind(a, b, **params)  # bfloat16 operands: one exact pass anyway
    p = dict(params)
    if "precision" in p:
        p["precision"] = None
    if "preferred_element_type" in p:
        p["preferred_element_type"] = jnp.float32
    n = 3 if passes == 6 else (2 if passes == 3 else 1)
    sa, sb = _split(a, n), _split(b, n)
    out = None
    for i, j in _PAIRS[passes]:
        term = prim.bind(sa[i], sb[j], **p)
        out = term if out is None else out + term
    return out


def _category(eqn) -> str | None:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        return "conv"
    if name == "dot_general":
        prec = eqn.params.get("precision")
        explicit = prec is not None and any(
            q is not None for q in (prec if isinstance(prec, tuple) else (prec,))
        )
        return "dft" if explicit else "pointwise"
    return None


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None:
            return sub
    return None


# Primitives that call their sub-jaxpr once on their own operands, so the emulator can evaluate
# the sub-jaxpr in their place. jax.checkpoint is "remat2" (the AFC fine-grid maps on a TPU).
_CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint")  # fmt: skip


def _nested(eqn):
    """The jaxprs an equation carries in its parameters (calls, loops, branches)."""
    for value in eqn.params.values():
        for sub in value if isinstance(value, (list, tuple)) else [value]:
            sub = getattr(sub, "jaxpr", sub)
            if hasattr(sub, "eqns"):
                yield sub


def _has_products(jaxpr) -> bool:
    return any(
        _category(e) is not None or any(_has_products(s) for s in _nested(e)) for e in jaxpr.eqns
    )


def eval_emulated(closed, args, policy: dict):
    """Evaluates a ClosedJaxpr with the emulated products of `policy` {category: passes}."""
    jaxpr = closed.jaxpr if hasattr(closed, "jaxpr") else closed
    consts = closed.consts if hasattr(closed, "consts") else []
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        cat = _category(eqn)
        sub = _sub_jaxpr(eqn)
        if cat is not None:
            outvals = [_emulated(eqn.primitive, policy[cat], *invals, eqn.params)]
        elif sub is not None and eqn.primitive.name in _CALLS:
            outvals = eval_emulated(sub, invals, policy)
        else:
            if any(_has_products(inner) for inner in _nested(eqn)):
                # Evaluated natively, its products would escape the policy under test.
                raise NotImplementedError(
                    f"products inside a {eqn.primitive.name!r} equation cannot be emulated; "
                    "add the primitive to benchmarks.tpu_precision._CALLS if it is a call"
                )
            outvals = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
        for v, val in zip(eqn.outvars, outvals):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


POLICIES_F32 = (
    ("exact float32 (CPU)", dict(dft=0, pointwise=0, conv=0)),
    ("all HIGHEST", dict(dft=6, pointwise=6, conv=6)),
    ("all HIGH", dict(dft=3, pointwise=3, conv=3)),
    ("all DEFAULT", dict(dft=1, pointwise=1, conv=1)),
    ("dft HIGHEST, rest DEFAULT (precision=None on TPU)", dict(dft=6, pointwise=1, conv=1)),
    ("dft HIGH, rest DEFAULT", dict(dft=3, pointwise=1, conv=1)),
    ("dft DEFAULT, rest HIGHEST", dict(dft=1, pointwise=6, conv=6)),
)
POLICIES_BF16 = (
    ("dft exact (rest as the TPU: bfloat16 operands)", dict(dft=0, pointwise=1, conv=1)),
    ("dft HIGHEST", dict(dft=6, pointwise=1, conv=1)),
    ("dft HIGH", dict(dft=3, pointwise=1, conv=1)),
    ("dft DEFAULT", dict(dft=1, pointwise=1, conv=1)),
)
# The bfloat16 program exactly as afc-jax builds it for a TPU: `filter_precision`'s one-pass
# products with bfloat16 operands, intermediates and fine grid (the rows above trace the filters
# as float32 products and round only their operands), every product one pass.
SHIPPED = "as afc-jax runs: dft DEFAULT, bf16 operands and fine grid"
SIZES = {"nano": dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64)),
         "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))}  # fmt: skip


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _highest(dtype):
    return filter_matrices.HIGHEST


def measure(model_size: str, size: int, batch: int = 2, log=print) -> list[dict]:
    rows = []
    x = jnp.asarray(np.random.default_rng(3).standard_normal((batch, size, size, 3)), jnp.float32)
    shifted = {name: ops.fractional_shift(x, d) for name, d in SHIFTS}
    for dtype, policies in ((jnp.float32, POLICIES_F32), (jnp.bfloat16, POLICIES_BF16)):
        model = models.create("convnext_afc", num_classes=10, dtype=dtype, **SIZES[model_size])
        params = random_params(model, size, seed=5)
        # The TPU's choices (native depthwise conv, matrix filters, NCHW fine grids), with the
        # filter products traced as float32 HIGHEST products so that the policy under test,
        # not `filter_matrices.filter_precision`, decides how they are rounded.
        fm = filter_matrices
        policy_fn, fm.filter_precision = fm.filter_precision, _highest
        try:
            with targeting("tpu"):
                closed = jax.make_jaxpr(lambda p, x, m=model: m.apply({"params": p}, x))(params, x)
        finally:
            fm.filter_precision = policy_fn
        if dtype == jnp.bfloat16:  # and the program afc-jax itself builds for a TPU
            with targeting("tpu"):
                shipped = jax.make_jaxpr(lambda p, x, m=model: m.apply({"params": p}, x))(
                    params, x
                )
            policies = policies + ((SHIPPED, dict(dft=1, pointwise=1, conv=1)),)
        p_leaves = jax.tree_util.tree_leaves(params)
        exact = None
        for label, policy in policies:
            c = shipped if label == SHIPPED else closed
            run = jax.jit(
                lambda leaves, x, pol=policy, c=c: eval_emulated(c, [*leaves, x], pol)[0]
            )
            ref = run(p_leaves, x)
            exact = ref if exact is None else exact
            errs = {name: _rel(run(p_leaves, xs), ref) for name, xs in shifted.items()}
            row = {"compute": jnp.dtype(dtype).name, "policy": label, "passes": policy,
                   "per_shift": errs, "max_rel_change": max(errs.values()),
                   "rel_diff_vs_exact_logits": _rel(ref, exact)}  # fmt: skip
            log(
                f"{row['compute']:9} {label:52} shift {row['max_rel_change']:.2e}  "
                f"vs exact {row['rel_diff_vs_exact_logits']:.2e}"
            )
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(SIZES), default="nano")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    rows = measure(args.model, args.size)
    suffix = "" if args.model == "nano" else f"_{args.model}"
    out = os.path.join(args.out, f"tpu_precision{suffix}.json")
    cmd = f"python -m benchmarks.tpu_precision --model {args.model} --size {args.size}"
    meta = {"command": cmd, "jax": jax.__version__, "model": args.model, "image_size": args.size}
    with open(out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
