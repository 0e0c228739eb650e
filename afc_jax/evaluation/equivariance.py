"""Feature equivariance: does featurising a shifted image equal shifting the feature map?

For each stage map F_s of total stride s (4, 8, 16, 32 for ConvNeXt stages 0..3) and each
input shift d (integer or fractional pixels), the relative error

    || shift(F_s(x), d / s) - F_s(shift(x, d)) ||_2  /  || F_s(shift(x, d)) ||_2

per example (feature maps shifted with the same circular shift as the images: an exact roll
when d / s is whole, the band-limited Fourier shift otherwise). An alias-free network gives
float32 round-off (~1e-6) for every stage and every shift; aliasing networks give errors of
order 1e-2..1 at fractional shifts, and at integer shifts that are not multiples of s.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.evaluation.protocols import Batch, Protocol, circular_shift, shifted_copies


class FeatureEquivariance(Protocol):
    """Per-stage equivariance error on the first `num_examples` examples.

    Needs a classifier with `features` and `strides` (every Flax ConvNeXt has them; for a
    plain callable pass `as_classifier(fn, features=..., strides=...)`); without them the
    result says so instead of failing the evaluation.
    """

    name = "feature_equivariance"

    def __init__(self, integer_shifts, fractional_shifts, num_examples: int = 32):
        super().__init__()
        self.integer_shifts = np.asarray(integer_shifts, np.float32).reshape(-1, 2)
        self.fractional_shifts = np.asarray(fractional_shifts, np.float32).reshape(-1, 2)
        self.shifts = np.concatenate([self.integer_shifts, self.fractional_shifts], axis=0)
        if len(self.shifts) == 0:
            raise ValueError("feature_equivariance needs at least one shift")
        self.num_examples = int(num_examples)

    def setup(self, engine):
        super().setup(engine)
        clf = engine.classifier
        self.available = clf.features is not None and bool(clf.strides)
        self.count = 0
        self.names: list[str] = []
        self.sums = None
        self.maxs = None
        if not self.available:
            return
        self.names = sorted(clf.strides, key=lambda k: (clf.strides[k], k))
        strides = np.asarray([clf.strides[k] for k in self.names], np.float32)
        names = self.names
        ndev = engine.num_devices
        limit = self.num_examples

        def step(variables, images, valid, pos, shifts):
            b = images.shape[0]
            m = min(b, -(-limit // ndev) * ndev)  # only the rows that can hold selected ones
            images, valid, pos = images[:m], valid[:m], pos[:m]
            sel = valid & (pos < limit)
            f0 = clf.features(variables, engine.constrain(images))
            moved = shifted_copies(images, shifts, circular_shift)
            k = moved.shape[1]
            flat = engine.constrain(moved.reshape((m * k,) + moved.shape[2:]))
            fs = clf.features(variables, flat)
            sums, maxs = [], []
            for name, stride in zip(names, strides):
                got = fs[name].reshape((m, k) + fs[name].shape[1:]).astype(jnp.float32)
                want = shifted_copies(f0[name].astype(jnp.float32), shifts / stride, circular_shift)
                num = jnp.sqrt(jnp.sum(jnp.square(want - got), axis=(2, 3, 4)))
                den = jnp.sqrt(jnp.sum(jnp.square(got), axis=(2, 3, 4)))
                err = num / jnp.maximum(den, 1e-30)  # (m, k)
                sums.append(jnp.sum(jnp.where(sel[:, None], err, 0.0), axis=0))
                maxs.append(jnp.max(jnp.where(sel[:, None], err, 0.0), axis=0))
            return jnp.stack(sums), jnp.stack(maxs), jnp.sum(sel)

        self._step = engine.cached(
            ("feature_equivariance", limit),
            lambda: jax.jit(step, out_shardings=(engine.replicated,) * 3),
        )
        self._shifts = engine.replicate(self.shifts)
        self.sums = np.zeros((len(names), len(self.shifts)), np.float64)
        self.maxs = np.zeros((len(names), len(self.shifts)), np.float64)

    def update(self, batch: Batch) -> None:
        if not self.available or batch.index * batch.size >= self.num_examples:
            return
        t0 = time.perf_counter()
        sums, maxs, count = jax.device_get(
            self._step(self.engine.variables, batch.images, batch.valid, batch.pos, self._shifts)
        )
        self.sums += np.asarray(sums)
        self.maxs = np.maximum(self.maxs, np.asarray(maxs))
        self.count += int(count)
        m = min(
            batch.size, -(-self.num_examples // self.engine.num_devices) * self.engine.num_devices
        )
        self.account(m * len(self.shifts), time.perf_counter() - t0)

    def result(self) -> dict:
        if not self.available:
            return {
                "available": False,
                "reason": "the classifier exposes no feature maps (pass features= and strides=)",
            }
        n = max(self.count, 1)
        mean = self.sums / n
        out = {
            "available": True,
            "count": int(self.count),
            "stages": list(self.names),
            "strides": {k: int(self.engine.classifier.strides[k]) for k in self.names},
            "error": "relative L2 error ||shift(F(x), d/stride) - F(shift(x, d))|| / "
            "||F(shift(x, d))||, mean and max over examples",
        }
        ni = len(self.integer_shifts)
        for kind, cols in (("integer", slice(0, ni)), ("fractional", slice(ni, None))):
            shifts = self.shifts[cols]
            if len(shifts) == 0:
                continue
            out[kind] = {
                "shifts": shifts.tolist(),
                "mean": {k: float(np.mean(mean[i, cols])) for i, k in enumerate(self.names)},
                "max": {k: float(np.max(self.maxs[i, cols])) for i, k in enumerate(self.names)},
                "per_shift_mean": {k: mean[i, cols].tolist() for i, k in enumerate(self.names)},
            }
        out.update(self.throughput())
        return out
