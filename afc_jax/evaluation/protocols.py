"""Shared pieces of the shift-robustness protocols: classifiers, shifts, the device engine.

- `Classifier` / `as_classifier`: any `apply_fn(images) -> logits` callable, or a Flax model
  with its variables, in one form the evaluators jit (variables are jit arguments, never
  baked-in constants).
- Shift sets (`integer_grid_shifts`, `half_pixel_grid_shifts`, `fractional_grid_shifts`,
  `crop_offsets`) and image shifts (`circular_shift`: exact gather for integer shifts, Fourier
  phase ramp `ops.fractional_shift` otherwise; `crop_window`).
- `Engine`: a classifier placed on a device mesh (variables replicated, or FSDP-sharded by
  training's rule, `afc_jax.parallel`), one jitted unshifted forward per batch, helpers to put
  host data on the mesh.
- `Batch`: one global batch on the mesh plus its unshifted logits; `Protocol`: the interface
  every evaluator implements (`setup`, `update(batch)`, `result()`); `Accuracy` and
  `RandomShift` (consistency) live here, the certified grids in `certified.py` and feature
  equivariance in `equivariance.py`.

Shifts follow `ops.fractional_shift`: a positive shift moves content towards higher indices,
like `jnp.roll`; the official sub-pixel sets are therefore negative (see `SHIFT_SETS`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from afc_jax import parallel
from afc_jax.ops import fractional_shift

STAGE_STRIDES = {"stage0": 4, "stage1": 8, "stage2": 16, "stage3": 32}

# ----------------------------------------------------------------------------- classifiers


@dataclasses.dataclass(eq=False)
class Classifier:
    """What the evaluators run.

    Attributes:
      apply: `apply(variables, images) -> logits` (N, num_classes), jittable.
      variables: a PyTree passed to `apply` (empty for plain callables).
      features: optional `features(variables, images) -> {name: (N, h, w, c) map}` for
        feature equivariance; `strides[name]` is the input pixels per map pixel.
      strides: total stride of each feature map.
      name: a label for reports.
    """

    apply: Callable[[Any, jax.Array], jax.Array]
    variables: Any = dataclasses.field(default_factory=dict)
    features: Callable[[Any, jax.Array], Mapping[str, jax.Array]] | None = None
    strides: Mapping[str, int] | None = None
    name: str = "model"


def model_classifier(model: nn.Module, variables, name: str | None = None) -> Classifier:
    """A Flax ConvNeXt (logits from `model.apply`, stage maps from its intermediates)."""

    def apply(v, x):
        return model.apply(v, x).astype(jnp.float32)

    def features(v, x):
        _, state = model.apply(v, x, mutable=["intermediates"])
        inter = state["intermediates"]
        return {k: inter[k][0].astype(jnp.float32) for k in STAGE_STRIDES if k in inter}

    return Classifier(
        apply=apply,
        variables=variables,
        features=features,
        strides=dict(STAGE_STRIDES),
        name=name or getattr(model.family, "name", "model"),
    )


def as_classifier(obj, variables=None, *, name: str | None = None, features=None, strides=None):
    """A `Classifier` from a Classifier, a Flax module (+ variables) or `apply_fn(images)`.

    For a plain callable, `features(images) -> {name: map}` and `strides` may be given for
    the feature-equivariance protocol.
    """
    if isinstance(obj, Classifier):
        return obj
    if isinstance(obj, nn.Module):
        if variables is None:
            raise ValueError("a Flax model needs its variables: as_classifier(model, variables)")
        return model_classifier(obj, variables, name)
    if not callable(obj):
        raise TypeError(f"expected a Classifier, a Flax module or a callable, got {type(obj)}")
    fn = obj
    feat = None
    if features is not None:

        def feat(v, x):
            return {k: m.astype(jnp.float32) for k, m in features(x).items()}

    return Classifier(
        apply=lambda v, x: fn(x).astype(jnp.float32),
        variables={},
        features=feat,
        strides=dict(strides) if strides else None,
        name=name or getattr(fn, "__name__", "apply_fn"),
    )


# ----------------------------------------------------------------------------- shift sets


# Which shift sets the certified protocols use. "official": the paper's evaluation script
# (shift_eval.py) exactly; "all": every shift of the square grids, with sub-pixel shifts moving
# content towards higher indices (afc-jax's sets before they followed the script).
SHIFT_SETS = ("official", "all")


def _check_sets(sets: str) -> None:
    if sets not in SHIFT_SETS:
        raise ValueError(f"shift sets must be one of {SHIFT_SETS}, got {sets!r}")


def integer_grid_shifts(max_shift: int, sets: str = "official") -> np.ndarray:
    """Integer circular shifts (dy, dx), row-major.

    "official": (0, 0) and every (dy, dx) with 1 <= dy, dx < max_shift (no shift along one
    axis only): 1 + (max_shift - 1)**2 shifts. "all": every 0 <= dy, dx < max_shift.
    """
    _check_sets(sets)
    lo = 0 if sets == "all" else 1
    dy, dx = np.meshgrid(np.arange(lo, max_shift), np.arange(lo, max_shift), indexing="ij")
    grid = np.stack([dy.ravel(), dx.ravel()], axis=1)
    if sets == "official":
        grid = np.concatenate([np.zeros((1, 2), grid.dtype), grid])
    return grid.astype(np.float32).reshape(-1, 2)


def half_pixel_grid_shifts(max_shift: int, sets: str = "official") -> np.ndarray:
    """((max_shift-1)**2, 2) half-pixel circular shifts, for 1 <= dy, dx < max_shift.

    "official": (-(dy - 1/2), -(dx - 1/2)): the official sub-pixel shift moves content towards
    lower indices (the opposite of its integer rolls). "all": (dy - 1/2, dx - 1/2).
    """
    _check_sets(sets)
    sign = -1.0 if sets == "official" else 1.0
    v = sign * (np.arange(1, max_shift) - 0.5)
    dy, dx = np.meshgrid(v, v, indexing="ij")
    return np.stack([dy.ravel(), dx.ravel()], axis=1).astype(np.float32).reshape(-1, 2)


def fractional_grid_shifts(denominators, sets: str = "official") -> np.ndarray:
    """Every (a/u, b/u) with 1 <= a, b < u for each u (in the order given); negated for
    "official" (content towards lower indices, as the official script shifts)."""
    _check_sets(sets)
    sign = -1.0 if sets == "official" else 1.0
    rows = [
        (sign * a / u, sign * b / u) for u in denominators for a in range(1, u) for b in range(1, u)
    ]
    return np.asarray(rows, np.float32).reshape(-1, 2)


def crop_offsets(margin: int, sets: str = "official") -> np.ndarray:
    """Window offsets (oy, ox) into the image resized to size + 2m, row-major.

    "official": 1 <= oy, ox <= 2m ((2m)**2 windows, the centre one included); "all":
    0 <= oy, ox <= 2m ((2m+1)**2 windows).
    """
    _check_sets(sets)
    lo = 0 if sets == "all" else 1
    oy, ox = np.meshgrid(
        np.arange(lo, 2 * margin + 1), np.arange(lo, 2 * margin + 1), indexing="ij"
    )
    return np.stack([oy.ravel(), ox.ravel()], axis=1).astype(np.float32).reshape(-1, 2)


# ----------------------------------------------------------------------------- image shifts


def integer_roll(x: jax.Array, shift) -> jax.Array:
    """`jnp.roll(x, shift, axis=(-3, -2))` for traced integer (dy, dx), exactly (a gather)."""
    h, w = x.shape[-3], x.shape[-2]
    dy = jnp.asarray(shift[0]).astype(jnp.int32)
    dx = jnp.asarray(shift[1]).astype(jnp.int32)
    iy = jnp.mod(jnp.arange(h, dtype=jnp.int32) - dy, h)
    ix = jnp.mod(jnp.arange(w, dtype=jnp.int32) - dx, w)
    return jnp.take(jnp.take(x, iy, axis=-3), ix, axis=-2)


def circular_shift(x: jax.Array, shift) -> jax.Array:
    """Circular shift of (..., H, W, C) by a traced (dy, dx): exact roll when both are whole
    numbers, the band-limited Fourier shift (`ops.fractional_shift`) otherwise."""
    s = jnp.asarray(shift, jnp.float32)
    r = jnp.round(s)
    whole = jnp.all(jnp.abs(s - r) < 1e-4)
    rolled = integer_roll(x, r)
    moved = fractional_shift(x, (s[0], s[1]))
    return jnp.where(whole, rolled, moved.astype(x.dtype))


def crop_window(x: jax.Array, offset, size: tuple[int, int]) -> jax.Array:
    """The (size[0], size[1]) window of (..., H', W', C) at traced integer offset (oy, ox)."""
    oy = jnp.asarray(offset[0]).astype(jnp.int32)
    ox = jnp.asarray(offset[1]).astype(jnp.int32)
    rows = jax.lax.dynamic_slice_in_dim(x, oy, size[0], axis=x.ndim - 3)
    return jax.lax.dynamic_slice_in_dim(rows, ox, size[1], axis=x.ndim - 2)


def shifted_copies(x: jax.Array, shifts: jax.Array, transform: Callable) -> jax.Array:
    """(B, ...) images and (K, 2) shifts -> (B, K, ...): example-major, so that merging the
    two leading axes keeps each device's examples on that device."""
    return jax.vmap(lambda s: transform(x, s), out_axes=1)(shifts)


def circular_copies(x: jax.Array, shifts: jax.Array) -> jax.Array:
    """`shifted_copies(x, shifts, circular_shift)`, skipping the FFTs when every shift of the
    chunk is whole (one compiled function serves integer and fractional grids)."""
    whole = jnp.all(jnp.abs(shifts - jnp.round(shifts)) < 1e-4)
    return jax.lax.cond(
        whole,
        lambda: shifted_copies(x, jnp.round(shifts), integer_roll),
        lambda: shifted_copies(x, shifts, circular_shift),
    )


# ----------------------------------------------------------------------------- engine


@dataclasses.dataclass
class Batch:
    """One global batch on the mesh.

    images (B, S, S, C), labels (B,), valid (B,) (False for padding and examples beyond the
    example limit), pos (B,) global example positions, logits (B, classes) unshifted.
    """

    index: int
    images: jax.Array
    labels: jax.Array
    valid: jax.Array
    pos: jax.Array
    logits: jax.Array

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])


class Engine:
    """A classifier on a mesh: placed variables, jitted forwards, host <-> mesh helpers."""

    def __init__(self, classifier: Classifier, mesh: Mesh | None = None, *, fsdp_min_size=2**18):
        self.classifier = classifier
        self.fsdp_min_size = int(fsdp_min_size)
        self.mesh = parallel.data_parallel_mesh() if mesh is None else mesh
        self.num_devices = int(self.mesh.devices.size)
        self.data_sharding = parallel.batch_sharding(self.mesh)
        self.replicated = parallel.replicated(self.mesh)
        # Replicated, except arrays of >= fsdp_min_size elements, split over the `fsdp` axis
        # (when it has more than one device) like training's parameters.
        self.variables = parallel.place(classifier.variables, self.mesh, self.fsdp_min_size)
        self._cache: dict[Any, Callable] = {}
        self._logits = jax.jit(self._forward, out_shardings=self.data_sharding)

    # ------------------------------------------------------------------ placement

    def with_variables(self, variables) -> Engine:
        """The same engine (and compiled functions) for other variables of the same model:
        evaluating several checkpoints of one architecture compiles once."""
        other = copy.copy(self)  # shares the jit cache
        other.variables = parallel.place(variables, self.mesh, self.fsdp_min_size)
        return other

    def replicate(self, array) -> jax.Array:
        """A host array (identical on every process) as a replicated global array."""
        return parallel.replicate(array, self.mesh)

    def cached(self, key, build: Callable[[], Callable]) -> Callable:
        """One jitted function per key (jax then compiles once per input shape)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # ------------------------------------------------------------------ forwards

    def constrain(self, x):
        """Keeps a (batch-leading) intermediate split over the devices like the data."""
        if x.shape[0] % self.num_devices:
            return x
        return jax.lax.with_sharding_constraint(x, self.data_sharding)

    def logits_of(self, variables, images):
        """Float32 logits of a batch of images, batch split over the mesh."""
        return self.classifier.apply(variables, self.constrain(images)).astype(jnp.float32)

    def _forward(self, variables, images):
        return self.logits_of(variables, images)

    def make_batch(self, index: int, local: Mapping[str, np.ndarray]) -> Batch:
        """Assembles a global batch from this process's local dict {image, label, valid, pos}."""
        arrays = {
            k: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(v, dtype))
            for k, v, dtype in (
                ("image", local["image"], np.float32),
                ("label", local["label"], np.int32),
                ("valid", local["valid"], bool),
                ("pos", local["pos"], np.int32),
            )
        }
        logits = self._logits(self.variables, arrays["image"])
        return Batch(
            index=index,
            images=arrays["image"],
            labels=arrays["label"],
            valid=arrays["valid"],
            pos=arrays["pos"],
            logits=logits,
        )


# ----------------------------------------------------------------------------- protocols


class Protocol:
    """Interface of an evaluator: `setup(engine)`, then `update(batch)` per batch, then
    `result()` (a JSON-able dict, identical on every process).

    Subclasses report each batch's (example, shift) forwards and wall time (work
    synchronised) with `account`; the throughput leaves out the first batch, which pays for
    compilation, whenever there is more than one.
    """

    name = "protocol"

    def __init__(self):
        self.engine: Engine | None = None
        self.pairs = 0
        self.seconds = 0.0
        self.warm_pairs = 0
        self.warm_seconds = 0.0
        self.updates = 0

    def setup(self, engine: Engine) -> None:
        self.engine = engine

    def account(self, pairs: int, seconds: float) -> None:
        self.pairs += int(pairs)
        self.seconds += seconds
        if self.updates:
            self.warm_pairs += int(pairs)
            self.warm_seconds += seconds
        self.updates += 1

    def update(self, batch: Batch) -> None:
        raise NotImplementedError

    def result(self) -> dict:
        raise NotImplementedError

    def throughput(self) -> dict:
        total = self.pairs / self.seconds if self.seconds > 0 else 0.0
        warm = self.warm_pairs / self.warm_seconds if self.warm_seconds > 0 else total
        return {
            "pairs": int(self.pairs),
            "seconds": self.seconds,
            "pairs_per_sec": warm,
            "pairs_per_sec_incl_compile": total,
        }


def _pct(num, den) -> float:
    return 100.0 * float(num) / float(den) if den else float("nan")


class Accuracy(Protocol):
    """Top-1 / top-5 accuracy of the unshifted images (percent)."""

    name = "accuracy"

    def setup(self, engine):
        super().setup(engine)
        self.totals = np.zeros(3, np.float64)

        def step(logits, labels, valid):
            top1 = jnp.argmax(logits, -1) == labels
            k = min(5, logits.shape[-1])
            top5 = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1)
            v = valid.astype(jnp.float32)
            return jnp.stack([jnp.sum(v), jnp.sum(top1 * v), jnp.sum(top5 * v)])

        self._step = engine.cached(
            ("accuracy",), lambda: jax.jit(step, out_shardings=engine.replicated)
        )

    def update(self, batch):
        t0 = time.perf_counter()
        self.totals += np.asarray(self._step(batch.logits, batch.labels, batch.valid))
        self.account(batch.size, time.perf_counter() - t0)

    def result(self):
        n, c1, c5 = self.totals
        return {
            "top1": _pct(c1, n),
            "top5": _pct(c5, n),
            "count": int(n),
            "correct": int(c1),
            **self.throughput(),
        }


class RandomShift(Protocol):
    """Consistency under random circular shifts (the paper's consistency tables).

    Per example, `num_shifts` random integer shifts and as many random fractional ones,
    each coordinate uniform in [0, max_shift) (drawn from the seed and the example's
    position, so they do not depend on the host layout). Reports, per kind, the percentage
    of (example, shift) pairs whose top-1 label equals the unshifted image's, and the mean
    absolute change of the probability of the unshifted top-1 class.
    """

    name = "random_shift"
    KINDS = ("integer", "fractional")

    def __init__(self, num_shifts: int = 5, max_shift: int = 32, seed: int = 0):
        super().__init__()
        self.num_shifts = int(num_shifts)
        self.max_shift = int(max_shift)
        self.seed = int(seed)

    def setup(self, engine):
        super().setup(engine)
        self.totals = np.zeros((len(self.KINDS), 3), np.float64)  # count, same, |dp|
        r, max_shift, seed = self.num_shifts, self.max_shift, self.seed

        def draw(pos):
            key = jax.random.fold_in(jax.random.PRNGKey(seed), pos)
            ki, kf = jax.random.split(key)
            whole = jax.random.randint(ki, (r, 2), 0, max_shift).astype(jnp.float32)
            frac = jax.random.uniform(kf, (r, 2), minval=0.0, maxval=float(max_shift))
            # keep fractional shifts off the integer lattice (probability ~0, but exact)
            frac = jnp.where(jnp.abs(frac - jnp.round(frac)) < 1e-3, frac + 0.5, frac)
            return jnp.concatenate([whole, frac], axis=0)  # (2r, 2)

        def roll_one(img, s):
            return integer_roll(img, s)

        def frac_one(img, s):
            return fractional_shift(img, (s[0], s[1]))

        def step(variables, images, logits0, valid, pos):
            shifts = jax.vmap(draw)(pos)  # (B, 2r, 2)
            whole = jax.vmap(jax.vmap(roll_one, in_axes=(None, 0)))(images, shifts[:, :r])
            frac = jax.vmap(jax.vmap(frac_one, in_axes=(None, 0)))(images, shifts[:, r:])
            moved = jnp.concatenate([whole, frac.astype(whole.dtype)], axis=1)  # (B, 2r, ...)
            b, k = moved.shape[:2]
            logits = engine.logits_of(variables, moved.reshape((b * k,) + moved.shape[2:]))
            logits = logits.reshape(b, k, -1)
            top0 = jnp.argmax(logits0, -1)
            p0 = jnp.take_along_axis(jax.nn.softmax(logits0), top0[:, None], -1)
            p = jnp.take_along_axis(jax.nn.softmax(logits), top0[:, None, None], -1)[..., 0]
            same = (jnp.argmax(logits, -1) == top0[:, None]).astype(jnp.float32)
            change = jnp.abs(p - p0)
            v = valid.astype(jnp.float32)[:, None]
            rows = []
            for i in range(2):
                sl = slice(i * r, (i + 1) * r)
                rows.append(
                    jnp.stack(
                        [
                            jnp.sum(v * jnp.ones_like(same[:, sl])),
                            jnp.sum(v * same[:, sl]),
                            jnp.sum(v * change[:, sl]),
                        ]
                    )
                )
            return jnp.stack(rows)

        self._step = engine.cached(
            ("random_shift", r, max_shift, seed),
            lambda: jax.jit(step, out_shardings=engine.replicated),
        )

    def update(self, batch):
        t0 = time.perf_counter()
        out = self._step(self.engine.variables, batch.images, batch.logits, batch.valid, batch.pos)
        self.totals += np.asarray(out)
        self.account(batch.size * 2 * self.num_shifts, time.perf_counter() - t0)

    def result(self):
        out = {"num_shifts": self.num_shifts, "max_shift": self.max_shift, "seed": self.seed}
        for i, kind in enumerate(self.KINDS):
            n, same, change = self.totals[i]
            out[kind] = {
                "consistency": _pct(same, n),
                "mean_abs_prob_change": float(change / n) if n else float("nan"),
                "pairs": int(n),
            }
        out.update(self.throughput())
        return out
