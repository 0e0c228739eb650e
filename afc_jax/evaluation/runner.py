"""Runs protocols over an evaluation split, for one classifier or several checkpoints.

- `evaluate(classifier, batches, protocols)`: one pass over the batches, every protocol fed
  from the same global batch (data read once, unshifted forward once);
- `run_shift_robustness(config, checkpoints, workdir)`: loads each checkpoint, evaluates it,
  writes `shift_robustness.json`, `shift_robustness.md` and the PNG plots into `workdir`
  (process 0) and returns the report. Progress goes to the `afc_jax.evaluation.runner`
  logger (INFO, process 0) and tqdm bars; printing the table is the caller's
  (`reporting.table_text`, `reporting.invariance_lines`).

The protocols come from `builders.build_protocols` (re-exported here).

Exact coverage on any number of hosts: every process feeds its local slice of each global
batch; padded examples carry mask False; each example also gets a global position
(batch * global_batch + process offset + row), which the example limit, the heat-map subset
and the per-example random shifts use, so results do not depend on the host layout.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from afc_jax import parallel
from afc_jax.evaluation import reporting, settings
from afc_jax.evaluation.builders import PROTOCOL_BUILDERS, build_protocols
from afc_jax.evaluation.certified import certified_together
from afc_jax.evaluation.loading import LoadedCheckpoint, detect, parse_spec, resolve
from afc_jax.evaluation.protocols import Engine, Protocol, as_classifier

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- one pass


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="batch",
        disable=not enabled or jax.process_index() != 0,
        dynamic_ncols=True,
        leave=True,
    )


class _GlobalPositions:
    """Places this process's local batches in the global batches every process feeds.

    The first batch fixes the global batch size (local rows x processes; it must split over
    the mesh's devices); each row gets its global position and a validity flag (the batch's
    mask, and position < max_examples when there is a limit).
    """

    def __init__(self, num_devices: int, max_examples: int = 0):
        self.num_devices = num_devices
        self.max_examples = max_examples
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.global_batch: int | None = None

    def _check(self, index: int, local_rows: int) -> None:
        global_rows = local_rows * self.process_count
        if self.global_batch is None:
            if global_rows % self.num_devices:
                raise settings.EvalConfigError(
                    f"the global eval batch ({global_rows}) must be divisible by the "
                    f"{self.num_devices} devices of the mesh (set eval.batch_size)"
                )
            self.global_batch = global_rows
        elif global_rows != self.global_batch:
            raise ValueError(
                f"batch {index} has {local_rows} rows, the first had "
                f"{self.global_batch // self.process_count}"
            )

    def batches(self, local_batches: Iterable[Mapping]) -> Iterator[tuple[int, dict]]:
        """(index, {image, label, valid, pos}) per local batch, until the example limit."""
        limit = self.max_examples
        for index, local in enumerate(local_batches):
            labels = np.asarray(local["label"])
            rows = int(labels.shape[0])
            self._check(index, rows)
            if limit and index * self.global_batch >= limit:
                return
            pos = index * self.global_batch + self.process_index * rows + np.arange(rows)
            mask = np.asarray(local.get("mask", np.ones(rows, bool)), bool)
            valid = mask & (pos < limit) if limit else mask
            yield index, {"image": local["image"], "label": labels, "valid": valid, "pos": pos}


def _shift_protocols(protocols) -> list[Protocol]:
    return [p for p in protocols if p.name != "accuracy"]


def _rate(protocols) -> float:
    """Steady-state (example, shift) pairs per second of the shift protocols."""
    ps = _shift_protocols(protocols)
    warm = sum(p.warm_seconds for p in ps)
    if warm > 0:
        return sum(p.warm_pairs for p in ps) / warm
    busy = sum(p.seconds for p in ps)
    return sum(p.pairs for p in ps) / busy if busy > 0 else 0.0


def _results(protocols) -> dict:
    """{name: result} of every protocol, plus the official script's integer and half-pixel
    grids certified together when both ran."""
    results = {p.name: p.result() for p in protocols}
    together = certified_together(protocols)
    if together is not None:
        results["integer_and_half_pixel_grid"] = together
    return results


def _throughput(protocols, engine: Engine, batches: int, global_batch, seconds: float) -> dict:
    shift_protocols = _shift_protocols(protocols)
    pairs = sum(p.pairs for p in shift_protocols)
    busy = sum(p.seconds for p in shift_protocols)
    return {
        "batches": batches,
        "global_batch_size": global_batch,
        "devices": engine.num_devices,
        "processes": jax.process_count(),
        "seconds": seconds,
        "pairs": int(pairs),
        "pairs_per_sec": _rate(protocols),
        "pairs_per_sec_incl_compile": pairs / busy if busy > 0 else 0.0,
        "note": "pairs: (example, shift) forwards the shift protocols computed; pairs_per_sec "
        "leaves out each protocol's first batch (compilation) when there are several",
    }


def evaluate(
    classifier,
    batches: Iterable[Mapping[str, np.ndarray]],
    protocols: list[Protocol],
    *,
    variables=None,
    mesh=None,
    max_examples: int = 0,
    total_batches: int | None = None,
    progress: bool = False,
    desc: str | None = None,
    fsdp_min_size: int = 2**18,
    engine: Engine | None = None,
) -> dict:
    """Runs `protocols` over `batches` (this process's local batches) for one classifier.

    Args:
      classifier: a `Classifier`, a Flax model (with `variables`) or `apply_fn(images)`.
      batches: dicts with "image" (local_batch, S, S, C), "label" and optionally "mask"
        (False for padding); every process passes the same number of batches.
      protocols: from `build_protocols` (fresh instances: they accumulate).
      mesh: a ('data', 'fsdp') mesh; default every device on the data axis.
      max_examples: only the first this many examples (global positions) count; 0 for all.
      total_batches: for the progress bar.
      engine: reuse an `Engine` (and its compiled functions) instead of building one for
        `classifier` (which may then be None).

    Returns:
      {"protocols": {name: result}, "throughput": {...}}.
    """
    if engine is None:
        engine = Engine(as_classifier(classifier, variables), mesh, fsdp_min_size=fsdp_min_size)
    for p in protocols:
        p.setup(engine)
    positions = _GlobalPositions(engine.num_devices, max_examples)
    bar = _progress(total_batches, desc or engine.classifier.name, progress)
    t0 = time.perf_counter()
    done = 0
    try:
        for index, local in positions.batches(batches):
            if index == 0 and max_examples and total_batches:
                bar.total = min(total_batches, -(-max_examples // positions.global_batch))
                bar.refresh()
            batch = engine.make_batch(index, local)
            for p in protocols:
                p.update(batch)
            done += 1
            bar.update(1)
            rate = _rate(protocols)
            if rate:
                bar.set_postfix_str(f"{rate:,.0f} pairs/s", refresh=False)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return {
        "protocols": _results(protocols),
        "throughput": _throughput(protocols, engine, done, positions.global_batch, seconds),
    }


# ----------------------------------------------------------------------------- end to end


def _info(message: str) -> None:
    """Progress for the user, from process 0 only (the entry points show `afc_jax` INFO)."""
    if jax.process_index() == 0:
        log.info(message)


def _eval_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config the eval iterator gets: eval.batch_size (when set) as eval_batch_size."""
    bs = int(config.eval.batch_size or 0)
    if not bs or bs == config.eval_batch_size:
        return config
    out = copy.deepcopy(config)
    with out.unlocked():
        out.eval_batch_size = bs
    return out


@dataclasses.dataclass
class _Sources:
    """The evaluation split and how it is read: the same for every checkpoint of a run."""

    config: ml_collections.ConfigDict  # with its `eval` section
    data_config: ml_collections.ConfigDict  # what the eval iterator gets
    info: Any  # num_classes, image_size, num_eval
    iterator_fn: Callable
    total_batches: int | None
    image_size: int
    protocol_names: tuple[str, ...]

    def local_batches(self):
        return self.iterator_fn(
            self.data_config,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )


def _sources(config, info, eval_iterator_fn, eval_steps_fn) -> _Sources:
    """The given data source, else `afc_jax.data`'s for `config`; settings validated."""
    if info is None or eval_iterator_fn is None or eval_steps_fn is None:
        from afc_jax import data as data_lib  # the input pipeline (TensorFlow): only if needed

        info = info if info is not None else data_lib.dataset_info(config)
        eval_iterator_fn = eval_iterator_fn or data_lib.create_eval_iterator
        eval_steps_fn = eval_steps_fn or getattr(data_lib, "eval_steps", None)
    image_size = int(getattr(info, "image_size", None) or config.data.image_size)
    names = settings.normalize_protocols(config.eval.protocols)
    settings.validate(config.eval, image_size)
    data_config = _eval_data_config(config)
    total = eval_steps_fn(info, data_config, jax.process_count()) if eval_steps_fn else None
    return _Sources(config, data_config, info, eval_iterator_fn, total, image_size, names)


class _Engines:
    """One `Engine` per architecture: checkpoints of equal models share its compiled
    functions, each with its own variables."""

    def __init__(self, mesh, fsdp_min_size: int):
        self.mesh = mesh
        self.fsdp_min_size = fsdp_min_size
        self._built: list[tuple[object, Engine]] = []

    def for_checkpoint(self, ck: LoadedCheckpoint) -> Engine:
        if ck.model is not None:
            for model, engine in self._built:
                if type(model) is type(ck.model) and model == ck.model:
                    return engine.with_variables(ck.variables)
        engine = Engine(ck.classifier(), self.mesh, fsdp_min_size=self.fsdp_min_size)
        if ck.model is not None:
            self._built.append((ck.model, engine))
        return engine


def _describe_start(ck: LoadedCheckpoint, protocols) -> str:
    where = [ck.model_name, ck.source]
    if ck.weights:
        where.append(f"{ck.weights} weights")
    if ck.step is not None:
        where.append(f"step {ck.step}")
    names = ", ".join(p.name for p in protocols)
    return f"shift robustness: {ck.name} ({', '.join(where)}): {names}"


def _evaluate_checkpoint(ck: LoadedCheckpoint, engine: Engine, sources: _Sources) -> dict:
    """One checkpoint's entry of the report (`reporting.summarize`)."""
    ev = sources.config.eval
    protocols = build_protocols(ev, sources.image_size, sources.protocol_names)
    _info(_describe_start(ck, protocols))
    for note in ck.notes:
        _info(f"  note: {note}")
    out = evaluate(
        None,
        sources.local_batches(),
        protocols,
        engine=engine,
        max_examples=int(ev.max_examples or 0),
        total_batches=sources.total_batches,
        progress=bool(ev.progress),
        desc=ck.name,
    )
    entry = reporting.summarize(ck.describe(), out["protocols"], out["throughput"])
    speed = out["throughput"]
    _info(
        f"  {entry['num_examples']} examples, {speed['pairs']:,} (example, shift) pairs, "
        f"{speed['pairs_per_sec']:,.0f} pairs/s"
    )
    return entry


def _report(sources: _Sources, entries: dict) -> dict:
    """The report: dataset, resolved settings and every checkpoint's entry."""
    ev, config = sources.config.eval, sources.config
    resolved = ev.to_dict()
    resolved["protocols"] = list(sources.protocol_names)
    resolved["crop_margin_resolved"] = settings.crop_margin(ev, sources.image_size)
    resolved["random_max_shift_resolved"] = int(ev.random_max_shift or ev.max_shift)
    resolved["global_batch_size"] = int(sources.data_config.eval_batch_size)
    return {
        "format": "afc_jax.shift_robustness",
        "version": 1,
        "dataset": {
            "name": str(config.data.get("name", "")),
            "split": str(config.data.get("eval_split", "")),
            "image_size": sources.image_size,
            "num_classes": int(sources.info.num_classes),
            "num_eval": int(getattr(sources.info, "num_eval", 0) or 0),
        },
        "settings": resolved,
        "checkpoints": entries,
    }


def run_shift_robustness(
    config: ml_collections.ConfigDict,
    checkpoints: list,
    workdir: str,
    *,
    info=None,
    eval_iterator_fn: Callable | None = None,
    eval_steps_fn: Callable | None = None,
    mesh=None,
) -> dict:
    """Evaluates checkpoints side by side and writes the reports into `workdir`.

    Args:
      config: the training config (an `eval` section is added when absent, see
        `settings.eval_config`).
      checkpoints: paths/specs (`label=path`; training workdirs, variables checkpoints,
        .pth files), `LoadedCheckpoint`s, `Classifier`s or (name, model_or_fn, variables).
      workdir: output folder (created).
      info, eval_iterator_fn, eval_steps_fn: default to `afc_jax.data.dataset_info`,
        `create_eval_iterator` and `eval_steps`; pass others to evaluate any source that
        follows the same contract.
      mesh: default `afc_jax.parallel.make_mesh(config)`.

    Returns:
      The report written to `workdir/shift_robustness.json`: {"checkpoints": {name: entry}}
      where each entry has `accuracy`, `integer_grid`, `half_pixel_grid`, `fractional_grid`
      and `crop_shift` (percent, None when not run), `num_examples`, `certified_invariant`
      and every protocol's details under `protocols`; plus `settings`, `dataset`, and on
      process 0 `files` (what was written).
    """
    config = settings.with_eval_config(config)
    for item in checkpoints:  # fail on a bad path before opening any data
        if isinstance(item, (str, os.PathLike)):
            detect(parse_spec(item)[1])
    sources = _sources(config, info, eval_iterator_fn, eval_steps_fn)
    mesh = parallel.make_mesh(config) if mesh is None else mesh
    engines = _Engines(mesh, int(config.mesh.get("fsdp_min_size", 2**18)))
    loaded = resolve(
        checkpoints, config, int(sources.info.num_classes), weights=str(config.eval.weights)
    )
    entries = {
        ck.name: _evaluate_checkpoint(ck, engines.for_checkpoint(ck), sources) for ck in loaded
    }
    report = _report(sources, entries)
    if jax.process_index() == 0:
        reporting.write_all(report, workdir, plots=bool(config.eval.plots))
    return report


__all__ = [
    "PROTOCOL_BUILDERS",
    "build_protocols",
    "evaluate",
    "run_shift_robustness",
]
