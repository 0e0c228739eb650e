"""Certified shift robustness: accuracy that holds for every shift of a set.

An example counts as certified over a set S when it is classified correctly on the unshifted
image and on every shift in S (`require_unshifted=False` drops the first condition; the crop
protocol uses that, its set already holds the centre window).

Work plan per batch (all on the mesh, one jitted step per shape):
- the shifts are processed in chunks: one forward classifies every example of the batch at
  `chunk` shifts (examples x shifts merged into one batch, example-major so each device keeps
  its own examples);
- a per-example `alive` flag (still certified) is updated after each chunk; the batch stops as
  soon as no example is alive (and none is kept for the heat map);
- when at most 1/`compact_factor` of the batch is still needed, the survivors are gathered
  into a batch `compact_factor` times smaller and the chunk grows by the same factor, so the
  forward keeps its size but spends it on live examples only (at most `max_compactions`
  times: each level is one more compiled shape);
- decisions read the device counters one chunk late, so the host never stalls the device
  (a batch with no example left to check, e.g. all wrong or padding, costs no chunk at all,
  and one with few starts compacted);
- the first `heatmap_examples` examples (global positions) stay in the computation until the
  end, so per-shift accuracy (heat maps) is measured over exactly those examples.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.evaluation.protocols import (
    Batch,
    Protocol,
    _pct,
    circular_copies,
    crop_window,
    shifted_copies,
)

KINDS = ("circular", "crop")


class CertifiedShift(Protocol):
    """Certified accuracy over a set of circular shifts or crop offsets.

    Args:
      name: protocol name (a key of the results).
      shifts: (n, 2) circular shifts (dy, dx), or crop offsets (oy, ox) for kind "crop".
      kind: "circular" (shift the image, wrap around) or "crop" (resize the image to
        size + 2 * crop_margin and take size x size windows at the offsets).
      require_unshifted: also require the unshifted image to be classified correctly.
      chunk_size: shifts per forward at full batch size.
      compact_factor, max_compactions: see the module docstring.
      heatmap_examples: examples (lowest global positions) kept at every shift for the
        per-shift accuracy; -1 for all, 0 for none.
      grid_shape: reshape of the per-shift accuracy for heat maps (rows, cols).
      grid_cells: (n, 2) (row, col) cell of each shift in `grid_shape` when the set does not
        fill the grid (cells without a shift are NaN in the heat map); default row-major.
      axes: {"dy": values, "dx": values} labels of the grid rows and columns.
      crop_margin, resize_method: for kind "crop".
      description: human-readable definition of the set (reports).
    """

    def __init__(
        self,
        name: str,
        shifts,
        *,
        kind: str = "circular",
        require_unshifted: bool = True,
        chunk_size: int = 8,
        compact_factor: int = 4,
        max_compactions: int = 2,
        heatmap_examples: int = 512,
        grid_shape: tuple[int, int] | None = None,
        grid_cells=None,
        axes: dict | None = None,
        crop_margin: int = 0,
        resize_method: str = "bicubic",
        description: str = "",
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        shifts = np.asarray(shifts, np.float32).reshape(-1, 2)
        if len(shifts) == 0:
            raise ValueError(f"{name}: the shift set is empty")
        self.name = name
        self.shifts = shifts
        self.kind = kind
        self.require_unshifted = bool(require_unshifted)
        self.chunk_size = max(1, int(chunk_size))
        self.compact_factor = int(compact_factor)
        self.max_compactions = int(max_compactions)
        self.heatmap_examples = int(heatmap_examples)
        self.grid_shape = grid_shape
        self.grid_cells = None if grid_cells is None else np.asarray(grid_cells, int).reshape(-1, 2)
        if self.grid_cells is not None and len(self.grid_cells) != len(shifts):
            raise ValueError(f"{name}: {len(self.grid_cells)} grid cells for {len(shifts)} shifts")
        self.axes = axes
        self.crop_margin = int(crop_margin)
        self.resize_method = resize_method
        self.description = description

    # ------------------------------------------------------------------ setup

    def setup(self, engine):
        super().setup(engine)
        self._reset_counts()
        kind, margin, method = self.kind, self.crop_margin, self.resize_method
        copies = _copies_fn(kind, margin)
        self._step = engine.cached(
            ("certified_step", kind, margin), lambda: _build_step(engine, copies)
        )
        self._compact = engine.cached(("certified_compact",), lambda: _build_compact(engine))
        self._start = engine.cached(("certified_start",), lambda: _build_start(engine))
        self._total = engine.cached(("certified_total",), lambda: _build_total(engine))
        self._positions = engine.cached(("certified_positions",), lambda: _build_positions(engine))
        if kind == "crop":
            self._resize = engine.cached(
                ("crop_resize", margin, method), lambda: _build_resize(engine, margin, method)
            )

    def _reset_counts(self) -> None:
        n = len(self.shifts)
        self.count = 0  # valid examples
        self.unshifted_correct = 0
        self.certified = 0
        self.heat_count = 0
        self.heat_correct = np.zeros(n, np.int64)
        self.naive_pairs = 0
        self.compactions = 0
        self.early_stops = 0
        self._certified_positions: list[np.ndarray] = []
        self._tables: dict[tuple[int, int], tuple[jax.Array, jax.Array]] = {}
        self._levels_for: dict[int, list[tuple[int, int]]] = {}

    def _levels(self, batch_size: int) -> list[tuple[int, int]]:
        """[(examples, shifts per forward)] for each compaction level of this batch size."""
        if batch_size not in self._levels_for:
            n = len(self.shifts)
            ndev = self.engine.num_devices
            # Level 0 always uses chunk_size (padded), so every circular grid shares one
            # compiled shape; larger chunks are capped by the set size.
            b, k = batch_size, self.chunk_size
            cap = max(self.chunk_size, n)
            levels = [(b, k)]
            for _ in range(max(0, self.max_compactions)):
                f = self.compact_factor
                if f < 2 or b % f or (b // f) % ndev or b // f < ndev:
                    break
                b, k = b // f, min(k * f, cap)
                levels.append((b, k))
            self._levels_for[batch_size] = levels
        return self._levels_for[batch_size]

    def _chunk(self, start: int, k: int):
        """Replicated (k, 2) shifts from `start` (padded by repetition) and their valid flags."""
        key = (start, k)
        if key not in self._tables:
            n = len(self.shifts)
            idx = np.arange(start, start + k)
            valid = idx < n
            table = self.shifts[np.minimum(idx, n - 1)]
            self._tables[key] = (self.engine.replicate(table), self.engine.replicate(valid))
        return self._tables[key]

    # ------------------------------------------------------------------ per batch

    def update(self, batch: Batch) -> None:
        engine = self.engine
        t0 = time.perf_counter()
        n = len(self.shifts)
        alive, heat, counts, live0 = self._start(
            batch.logits,
            batch.labels,
            batch.valid,
            batch.pos,
            self.heatmap_examples,
            self.require_unshifted,
        )
        src = batch.images if self.kind == "circular" else self._resize(batch.images)
        labels = batch.labels
        pos = batch.pos
        levels = self._levels(batch.size)
        level = 0
        start = 0
        # pending[i]: device count of the examples still needed after i chunks
        pending: list[jax.Array] = [live0]
        parts = []
        pairs = 0
        while start < n:
            # Decide from the count after the chunk before the last one (the initial count for
            # the first two chunks): it is ready while the last chunk still runs, and it
            # bounds every later count from above.
            live = int(pending[max(0, len(pending) - 2)])
            if live == 0:
                self.early_stops += 1
                break
            while level + 1 < len(levels) and live <= levels[level + 1][0]:
                level += 1
                src, labels, alive, heat, pos = self._compact(
                    src, labels, alive, heat, pos, levels[level][0]
                )
                self.compactions += 1
            b, k = levels[level]
            shifts, shift_valid = self._chunk(start, k)
            alive, heat_counts, live_count = self._step(
                engine.variables, src, labels, alive, heat, shifts, shift_valid
            )
            used = min(k, n - start)
            parts.append((start, used, heat_counts))
            pending.append(live_count)
            pairs += b * used
            start += k
        certified = self._total(alive)
        positions = self._positions(alive, pos)
        counts, certified, positions, heat_parts = jax.device_get(
            (counts, certified, positions, [p[2] for p in parts])
        )
        positions = np.asarray(positions)
        self._certified_positions.append(positions[positions >= 0])
        valid, correct, heat_n = (int(c) for c in np.asarray(counts))
        self.count += valid
        self.unshifted_correct += correct
        self.certified += int(certified)
        self.heat_count += heat_n
        self.naive_pairs += valid * n
        for (s, used, _), hc in zip(parts, heat_parts):
            self.heat_correct[s : s + used] += np.asarray(hc)[:used]
        self.account(pairs, time.perf_counter() - t0)

    # ------------------------------------------------------------------ result

    def certified_positions(self) -> np.ndarray:
        """Sorted global positions of the examples certified so far (identical on every
        process)."""
        if not self._certified_positions:
            return np.zeros((0,), np.int64)
        return np.sort(np.concatenate(self._certified_positions).astype(np.int64))

    def result(self) -> dict:
        out = {
            "certified": _pct(self.certified, self.count),
            "count": int(self.count),
            "certified_count": int(self.certified),
            "unshifted_accuracy": _pct(self.unshifted_correct, self.count),
            "num_shifts": int(len(self.shifts)),
            "requires_unshifted": self.require_unshifted,
            "kind": self.kind,
            "description": self.description,
            # the exact set, in evaluation order: (dy, dx) shifts, or crop window offsets
            "shifts": self.shifts.tolist(),
            "chunk_size": self.chunk_size,
            "naive_pairs": int(self.naive_pairs),
            "compactions": int(self.compactions),
            "early_stopped_batches": int(self.early_stops),
            "heatmap_examples": int(self.heat_count),
        }
        if self.kind == "crop":
            out["crop_margin"] = self.crop_margin
            out["resize_method"] = self.resize_method
        if self.heat_count:
            acc = 100.0 * self.heat_correct / self.heat_count
            if self.grid_shape is not None and self.grid_cells is not None:
                grid = np.full(self.grid_shape, np.nan)
                grid[self.grid_cells[:, 0], self.grid_cells[:, 1]] = acc
                out["per_shift_accuracy"] = grid.tolist()
                out["axes"] = self.axes
            elif self.grid_shape is not None:
                out["per_shift_accuracy"] = acc.reshape(self.grid_shape).tolist()
                out["axes"] = self.axes
            else:
                out["per_shift_accuracy"] = acc.tolist()
            worst = int(np.argmin(acc))
            out["worst_shift"] = {
                "shift": self.shifts[worst].tolist(),
                "accuracy": float(acc[worst]),
            }
        out.update(self.throughput())
        return out


# ----------------------------------------------------------------------------- jitted steps
# Built once per engine (`Engine.cached`) and shared by every protocol instance of that kind.


def _copies_fn(kind: str, margin: int):
    """(B, S', S', C) source images and (K, 2) shifts -> (B, K, S, S, C) shifted copies:
    circular shifts, or S x S windows of the images resized to S + 2 * margin."""

    def copies(src, shifts):
        if kind == "circular":
            return circular_copies(src, shifts)
        size = (src.shape[1] - 2 * margin, src.shape[2] - 2 * margin)
        return shifted_copies(src, shifts, lambda x, s: crop_window(x, s, size))

    return copies


def _build_step(engine, copies):
    """One chunk of shifts: who is still certified, per-shift heat-map counts, live count."""

    def step(variables, src, labels, alive, heat, shifts, shift_valid):
        moved = copies(src, shifts)
        b, k = moved.shape[:2]
        flat = moved.reshape((b * k,) + moved.shape[2:])
        logits = engine.logits_of(variables, flat).reshape(b, k, -1)
        ok = jnp.argmax(logits, -1) == labels[:, None]
        new_alive = alive & jnp.all(ok | ~shift_valid[None, :], axis=1)
        heat_counts = jnp.sum(ok & heat[:, None] & shift_valid[None, :], axis=0)
        return new_alive, heat_counts.astype(jnp.int32), jnp.sum(new_alive | heat)

    rep, dat = engine.replicated, engine.data_sharding
    return jax.jit(step, out_shardings=(dat, rep, rep))


def _build_compact(engine):
    """The `size` examples still needed (alive or in the heat map) first, the rest dropped."""

    def compact(src, labels, alive, heat, pos, size):
        keep = (alive | heat).astype(jnp.int32)
        order = jnp.argsort(-keep, stable=True)[:size]
        return src[order], labels[order], alive[order], heat[order], pos[order]

    dat = engine.data_sharding
    return jax.jit(compact, static_argnums=5, out_shardings=(dat,) * 5)


def _build_start(engine):
    """Per example: certifiable at all (alive), kept for the heat map; batch counts."""

    def start(logits, labels, valid, pos, heat_limit, require):
        correct = (jnp.argmax(logits, -1) == labels) & valid
        alive = correct if require else valid
        heat = valid if heat_limit < 0 else valid & (pos < heat_limit)
        counts = jnp.stack([jnp.sum(valid), jnp.sum(correct), jnp.sum(heat)])
        return alive, heat, counts, jnp.sum(alive | heat)

    rep, dat = engine.replicated, engine.data_sharding
    return jax.jit(start, static_argnums=(4, 5), out_shardings=(dat, dat, rep, rep))


def _build_resize(engine, margin: int, method: str):
    """(B, S, S, C) -> (B, S + 2 * margin, S + 2 * margin, C) for the crop protocol."""

    def resize(images):
        b, h, w, c = images.shape
        out = jax.image.resize(images, (b, h + 2 * margin, w + 2 * margin, c), method=method)
        return out.astype(images.dtype)

    return jax.jit(resize, out_shardings=engine.data_sharding)


def _build_total(engine):
    return jax.jit(lambda a: jnp.sum(a), out_shardings=engine.replicated)


def _build_positions(engine):
    """Global positions of the certified examples, -1 elsewhere."""
    return jax.jit(lambda a, p: jnp.where(a, p, -1), out_shardings=engine.replicated)


def certified_together(protocols, names=("integer_grid", "half_pixel_grid")) -> dict | None:
    """Examples certified on every one of the named certified protocols at once (the official
    script's "integer and half-pixel grids together"), from their per-example results; None
    unless all of them ran."""
    found = {p.name: p for p in protocols if isinstance(p, CertifiedShift)}
    if not all(n in found for n in names):
        return None
    parts = [found[n] for n in names]
    common = parts[0].certified_positions()
    for p in parts[1:]:
        common = np.intersect1d(common, p.certified_positions())
    count = parts[0].count
    return {
        "certified": _pct(len(common), count),
        "count": int(count),
        "certified_count": int(len(common)),
        "of": list(names),
        "num_shifts": int(sum(len(p.shifts) for p in parts)),
        "description": "certified on " + " and ".join(names) + " together",
    }
