"""Runs protocols over an evaluation split, for one classifier or several checkpoints.

- `build_protocols(eval_cfg, image_size)`: the configured evaluators, by name
  (`PROTOCOL_BUILDERS`);
- `evaluate(classifier, batches, protocols)`: one pass over the batches, every protocol fed
  from the same global batch (data read once, unshifted forward once);
- `run_shift_robustness(config, checkpoints, workdir)`: loads each checkpoint, evaluates it,
  writes `shift_robustness.json`, `shift_robustness.md` and the PNG plots into `workdir`,
  prints the table on process 0 and returns the report.

Exact coverage on any number of hosts: every process feeds its local slice of each global
batch; padded examples carry mask False; each example also gets a global position
(batch * global_batch + process offset + row), which the example limit, the heat-map subset
and the per-example random shifts use, so results do not depend on the host layout.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Mapping

import jax
import ml_collections
import numpy as np

from afc_jax.evaluation import reporting, settings
from afc_jax.evaluation.certified import CertifiedShift, certified_together
from afc_jax.evaluation.equivariance import FeatureEquivariance
from afc_jax.evaluation.loading import detect, parse_spec, resolve
from afc_jax.evaluation.protocols import (
    Accuracy,
    Engine,
    Protocol,
    RandomShift,
    as_classifier,
    crop_offsets,
    fractional_grid_shifts,
    half_pixel_grid_shifts,
    integer_grid_shifts,
)

# ----------------------------------------------------------------------------- protocols


def _certified_kwargs(ev) -> dict:
    return dict(
        chunk_size=int(ev.chunk_size),
        compact_factor=int(ev.compact_factor),
        max_compactions=int(ev.max_compactions),
        heatmap_examples=int(ev.heatmap_examples),
    )


def _sets(ev) -> str:
    return str(ev.get("shift_sets", "official"))


def _integer_grid(ev, image_size):
    m, sets = int(ev.max_shift), _sets(ev)
    shifts = integer_grid_shifts(m, sets)
    what = "(0, 0) and every (dy, dx), 1" if sets == "official" else "every (dy, dx), 0"
    return CertifiedShift(
        "integer_grid",
        shifts,
        grid_shape=(m, m),
        grid_cells=shifts.astype(int),  # the official set leaves (0, k) and (k, 0) out
        axes={"dy": list(range(m)), "dx": list(range(m))},
        description=f"integer circular shifts {what} <= dy, dx < {m} ({sets} set)",
        **_certified_kwargs(ev),
    )


def _half_pixel_grid(ev, image_size):
    m, sets = int(ev.max_shift), _sets(ev)
    if m < 2:
        raise ValueError("half_pixel_grid needs eval.max_shift >= 2")
    sign = "-" if sets == "official" else ""
    values = [float(v) for v in half_pixel_grid_shifts(m, sets)[: m - 1, 1]]
    return CertifiedShift(
        "half_pixel_grid",
        half_pixel_grid_shifts(m, sets),
        grid_shape=(m - 1, m - 1),
        axes={"dy": values, "dx": values},
        description=f"every circular shift ({sign}(dy - 1/2), {sign}(dx - 1/2)), "
        f"1 <= dy, dx < {m} ({sets} set)",
        **_certified_kwargs(ev),
    )


def _fractional_grid(ev, image_size):
    dens, sets = tuple(int(u) for u in ev.fractional_denominators), _sets(ev)
    sign = "-" if sets == "official" else ""
    return CertifiedShift(
        "fractional_grid",
        fractional_grid_shifts(dens, sets),
        description=f"every circular shift ({sign}a/u, {sign}b/u), 1 <= a, b < u, u in "
        + ", ".join(map(str, dens))
        + f" ({sets} set)",
        **_certified_kwargs(ev),
    )


def _crop_shift(ev, image_size):
    m, sets = settings.crop_margin(ev, image_size), _sets(ev)
    lo = 1 if sets == "official" else 0
    offsets = list(range(lo, 2 * m + 1))
    return CertifiedShift(
        "crop_shift",
        crop_offsets(m, sets),
        kind="crop",
        require_unshifted=False,
        grid_shape=(len(offsets), len(offsets)),
        axes={"dy": offsets, "dx": offsets},
        crop_margin=m,
        resize_method=str(ev.crop_resize_method),
        description=f"resize to {image_size}+2*{m} ({ev.crop_resize_method}), every "
        f"{image_size}x{image_size} window at offsets {lo}..{2 * m}, no wrap-around "
        f"({sets} set)",
        **_certified_kwargs(ev),
    )


def _random_shift(ev, image_size):
    return RandomShift(
        num_shifts=int(ev.random_shifts),
        max_shift=int(ev.random_max_shift or ev.max_shift),
        seed=int(ev.seed),
    )


def _feature_equivariance(ev, image_size):
    return FeatureEquivariance(
        ev.equivariance_integer_shifts,
        ev.equivariance_fractional_shifts,
        num_examples=int(ev.equivariance_examples),
    )


PROTOCOL_BUILDERS: dict[str, Callable[..., Protocol]] = {
    "accuracy": lambda ev, size: Accuracy(),
    "integer_grid": _integer_grid,
    "half_pixel_grid": _half_pixel_grid,
    "fractional_grid": _fractional_grid,
    "random_shift": _random_shift,
    "crop_shift": _crop_shift,
    "feature_equivariance": _feature_equivariance,
}


def build_protocols(eval_cfg=None, image_size: int = 224, names=None) -> list[Protocol]:
    """The evaluators named in `eval_cfg.protocols` (or `names`), configured by `eval_cfg`."""
    ev = eval_cfg if eval_cfg is not None else settings.eval_config()
    settings.validate(ev, image_size)
    names = settings.normalize_protocols(names if names is not None else ev.protocols)
    return [PROTOCOL_BUILDERS[n](ev, image_size) for n in names]


# ----------------------------------------------------------------------------- evaluation


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
    clf = engine.classifier
    for p in protocols:
        p.setup(engine)
    pidx, pcount = jax.process_index(), jax.process_count()
    bar = _progress(total_batches, desc or clf.name, progress)
    t0 = time.perf_counter()
    global_b = None
    n_batches = 0
    try:
        for bi, local in enumerate(batches):
            labels = np.asarray(local["label"])
            local_b = int(labels.shape[0])
            if global_b is None:
                global_b = local_b * pcount
                if global_b % engine.num_devices:
                    raise ValueError(
                        f"the global eval batch ({global_b}) must be divisible by the "
                        f"{engine.num_devices} devices of the mesh (set eval.batch_size)"
                    )
                if max_examples and total_batches:
                    total_batches = min(total_batches, -(-max_examples // global_b))
                    bar.total = total_batches
                    bar.refresh()
            elif local_b * pcount != global_b:
                raise ValueError(
                    f"batch {bi} has {local_b} rows, the first had {global_b // pcount}"
                )
            if max_examples and bi * global_b >= max_examples:
                break
            pos = bi * global_b + pidx * local_b + np.arange(local_b)
            mask = np.asarray(local.get("mask", np.ones(local_b, bool)), bool)
            valid = mask & (pos < max_examples) if max_examples else mask
            batch = engine.make_batch(
                bi, {"image": local["image"], "label": labels, "valid": valid, "pos": pos}
            )
            for p in protocols:
                p.update(batch)
            n_batches += 1
            bar.update(1)
            rate = _rate(protocols)
            if rate:
                bar.set_postfix_str(f"{rate:,.0f} pairs/s", refresh=False)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    results = {p.name: p.result() for p in protocols}
    together = certified_together(protocols)  # the official script's integer + half-pixel
    if together is not None:
        results["integer_and_half_pixel_grid"] = together
    shift_protocols = [p for p in protocols if p.name != "accuracy"]
    pairs = sum(p.pairs for p in shift_protocols)
    busy = sum(p.seconds for p in shift_protocols)
    throughput = {
        "batches": n_batches,
        "global_batch_size": global_b,
        "devices": engine.num_devices,
        "processes": pcount,
        "seconds": seconds,
        "pairs": int(pairs),
        "pairs_per_sec": _rate(protocols),
        "pairs_per_sec_incl_compile": pairs / busy if busy > 0 else 0.0,
        "note": "pairs: (example, shift) forwards the shift protocols computed; pairs_per_sec "
        "leaves out each protocol's first batch (compilation) when there are several",
    }
    return {"protocols": results, "throughput": throughput}


def _rate(protocols) -> float:
    """Steady-state (example, shift) pairs per second of the shift protocols."""
    ps = [p for p in protocols if p.name != "accuracy"]
    warm = sum(p.warm_seconds for p in ps)
    if warm > 0:
        return sum(p.warm_pairs for p in ps) / warm
    busy = sum(p.seconds for p in ps)
    return sum(p.pairs for p in ps) / busy if busy > 0 else 0.0


# ----------------------------------------------------------------------------- end to end


def _eval_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config the eval iterator gets: eval.batch_size (when set) as eval_batch_size."""
    bs = int(config.eval.batch_size or 0)
    if not bs or bs == config.eval_batch_size:
        return config
    out = copy.deepcopy(config)
    with out.unlocked():
        out.eval_batch_size = bs
    return out


def run_shift_robustness(
    config: ml_collections.ConfigDict,
    checkpoints: list,
    workdir: str,
    *,
    info=None,
    eval_iterator_fn: Callable | None = None,
    eval_steps_fn: Callable | None = None,
    mesh=None,
    verbose: bool = True,
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
      mesh: default `afc_jax.train.sharding.make_mesh(config)`.

    Returns:
      The report written to `workdir/shift_robustness.json`: {"checkpoints": {name: entry}}
      where each entry has `accuracy`, `integer_grid`, `half_pixel_grid`, `fractional_grid`
      and `crop_shift` (percent, None when not run), `num_examples`, `certified_invariant`
      and every protocol's details under `protocols`; plus `settings`, `dataset`, `files`.
    """
    config = settings.with_eval_config(config)
    ev = config.eval
    for item in checkpoints:  # fail on a bad path before opening any data
        if isinstance(item, (str, os.PathLike)):
            detect(parse_spec(item)[1])
    if info is None or eval_iterator_fn is None or eval_steps_fn is None:
        from afc_jax import data as data_lib

        info = info if info is not None else data_lib.dataset_info(config)
        eval_iterator_fn = eval_iterator_fn or data_lib.create_eval_iterator
        eval_steps_fn = eval_steps_fn or getattr(data_lib, "eval_steps", None)
    image_size = int(getattr(info, "image_size", None) or config.data.image_size)
    protocol_names = settings.normalize_protocols(ev.protocols)
    settings.validate(ev, image_size)
    data_config = _eval_data_config(config)
    if mesh is None:
        from afc_jax.train import sharding

        mesh = sharding.make_mesh(config)
    pidx, pcount = jax.process_index(), jax.process_count()
    total = eval_steps_fn(info, data_config, pcount) if eval_steps_fn else None
    loaded = resolve(checkpoints, config, int(info.num_classes), weights=str(ev.weights))
    log = print if verbose and pidx == 0 else (lambda *a, **k: None)

    entries = {}
    engines: list[tuple[object, Engine]] = []  # (model, engine): one compile per architecture
    fsdp_min_size = int(config.mesh.get("fsdp_min_size", 2**18))
    for ck in loaded:
        engine = None
        if ck.model is not None:
            same = [e for m, e in engines if type(m) is type(ck.model) and m == ck.model]
            if same:
                engine = same[0].with_variables(ck.variables)
        if engine is None:
            engine = Engine(ck.classifier(), mesh, fsdp_min_size=fsdp_min_size)
            if ck.model is not None:
                engines.append((ck.model, engine))
        protocols = build_protocols(ev, image_size, protocol_names)
        log(
            f"shift robustness: {ck.name} ({ck.model_name}, {ck.source}"
            + (f", {ck.weights} weights" if ck.weights else "")
            + (f", step {ck.step}" if ck.step is not None else "")
            + "): "
            + ", ".join(p.name for p in protocols)
        )
        for note in ck.notes:
            log(f"  note: {note}")
        batches = eval_iterator_fn(data_config, process_index=pidx, process_count=pcount)
        out = evaluate(
            None,
            batches,
            protocols,
            engine=engine,
            max_examples=int(ev.max_examples or 0),
            total_batches=total,
            progress=bool(ev.progress),
            desc=ck.name,
        )
        entry = reporting.summarize(ck.describe(), out["protocols"], out["throughput"])
        entries[ck.name] = entry
        log(
            f"  {entry['num_examples']} examples, {out['throughput']['pairs']:,} (example, shift)"
            f" pairs, {out['throughput']['pairs_per_sec']:,.0f} pairs/s"
        )

    resolved = ev.to_dict()
    resolved["protocols"] = list(protocol_names)
    resolved["crop_margin_resolved"] = settings.crop_margin(ev, image_size)
    resolved["random_max_shift_resolved"] = int(ev.random_max_shift or ev.max_shift)
    resolved["global_batch_size"] = int(data_config.eval_batch_size)
    report = {
        "format": "afc_jax.shift_robustness",
        "version": 1,
        "dataset": {
            "name": str(config.data.get("name", "")),
            "split": str(config.data.get("eval_split", "")),
            "image_size": image_size,
            "num_classes": int(info.num_classes),
            "num_eval": int(getattr(info, "num_eval", 0) or 0),
        },
        "settings": resolved,
        "checkpoints": entries,
    }
    if pidx == 0:
        reporting.write_all(report, workdir, plots=bool(ev.plots))
        if verbose:
            print()
            print(reporting.table_text(report))
            for e in entries.values():
                if e["certified_invariant"]:
                    print(
                        f"{e['name']}: test accuracy = integer grid = half-pixel grid = "
                        "fractional grid -> certified invariance to circular shifts"
                    )
            print(f"wrote {', '.join(sorted(report['files'].values()))}")
    return report


__all__ = [
    "PROTOCOL_BUILDERS",
    "build_protocols",
    "evaluate",
    "run_shift_robustness",
]
