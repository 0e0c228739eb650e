"""Reports: the paper's table (markdown), every figure (JSON) and plots (PNG, Agg backend)."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping

import numpy as np
from etils import epath

JSON_FILE = "shift_robustness.json"
MARKDOWN_FILE = "shift_robustness.md"
TABLE_COLUMNS = (
    ("accuracy", "test accuracy"),
    ("integer_grid", "integer grid"),
    ("half_pixel_grid", "half-pixel grid"),
    ("fractional_grid", "fractional grid"),
    ("crop_shift", "crop shift"),
)
CIRCULAR = ("accuracy", "integer_grid", "half_pixel_grid", "fractional_grid")
HEATMAPS = (("integer_grid", "integer shifts"), ("half_pixel_grid", "half-pixel shifts"))


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def summarize(described: Mapping, protocols: Mapping, throughput: Mapping) -> dict:
    """One checkpoint's entry of the JSON: headline percentages, then every detail."""
    acc = protocols.get("accuracy")
    entry = dict(described)
    entry["accuracy"] = acc["top1"] if acc else None
    entry["top5"] = acc["top5"] if acc else None
    grids = ("integer_grid", "half_pixel_grid", "fractional_grid", "crop_shift")
    for key in grids + ("integer_and_half_pixel_grid",):  # the last: both grids at once
        entry[key] = protocols[key]["certified"] if key in protocols else None
    counts = [p.get("count") for p in protocols.values() if isinstance(p, Mapping)]
    entry["num_examples"] = next((c for c in counts if c is not None), 0)
    rs = protocols.get("random_shift")
    if rs:
        entry["random_shift"] = {
            k: {
                "consistency": rs[k]["consistency"],
                "mean_abs_prob_change": rs[k]["mean_abs_prob_change"],
            }
            for k in ("integer", "fractional")
        }
    else:
        entry["random_shift"] = None
    present = [entry[k] for k in CIRCULAR if entry.get(k) is not None]
    entry["certified_invariant"] = len(present) >= 2 and all(
        abs(v - present[0]) < 1e-9 for v in present
    )
    entry["protocols"] = dict(protocols)
    entry["throughput"] = dict(throughput)
    return entry


def markdown(report: Mapping) -> str:
    """The paper's table (model | test accuracy | integer grid | half-pixel grid | fractional
    grid | crop shift), then consistency, equivariance and throughput tables."""
    entries = list(report["checkpoints"].values())
    lines = ["# Shift robustness", ""]
    lines += _dataset_lines(report, entries)
    lines += _headline_table(report, entries)
    lines += _consistency_table(entries)
    lines += _equivariance_table(entries)
    lines += _throughput_table(entries)
    settings = report.get("settings", {})
    if settings:
        lines += ["Settings: `" + json.dumps(settings, sort_keys=True) + "`", ""]
    return "\n".join(lines)


def _dataset_lines(report: Mapping, entries: list) -> list[str]:
    ds = report.get("dataset") or {}
    if not ds:
        return []
    return [
        f"Dataset `{ds.get('name')}` ({ds.get('split', 'eval')} split, "
        f"{entries[0]['num_examples'] if entries else 0} examples, "
        f"{ds.get('image_size')}x{ds.get('image_size')} px).",
        "",
    ]


def _headline_table(report: Mapping, entries: list) -> list[str]:
    """The paper's table, what it measures, each protocol's set, certified invariance."""
    header = "| model | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for e in entries:
        cells = [_fmt(e.get(key)) for key, _ in TABLE_COLUMNS]
        lines.append(f"| {e['name']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Top-1 accuracy and certified accuracy in percent: an example counts for a grid only if "
        "it is classified correctly on the unshifted image and on every shift of the grid "
        "(crop shift: on every window)."
    )
    lines += [f"- {line}" for line in protocol_notes(report)]
    for e in entries:
        if e.get("certified_invariant"):
            lines.append(
                f"- **{e['name']}**: test accuracy = every circular-shift grid: certified "
                "invariance to integer and fractional circular shifts on this set."
            )
    return lines + [""]


def _consistency_table(entries: list) -> list[str]:
    rows = [e for e in entries if e.get("random_shift")]
    if not rows:
        return []
    lines = [
        "## Consistency under random shifts",
        "",
        "| model | integer: consistency | integer: mean abs Δp | fractional: consistency "
        "| fractional: mean abs Δp |",
        "|---|---|---|---|---|",
    ]
    for e in rows:
        r = e["random_shift"]
        lines.append(
            f"| {e['name']} | {_fmt(r['integer']['consistency'])} | "
            f"{_fmt(r['integer']['mean_abs_prob_change'], 5)} | "
            f"{_fmt(r['fractional']['consistency'])} | "
            f"{_fmt(r['fractional']['mean_abs_prob_change'], 5)} |"
        )
    return lines + [""]


def _equivariance_table(entries: list) -> list[str]:
    rows = [
        e for e in entries if (e["protocols"].get("feature_equivariance") or {}).get("available")
    ]
    if not rows:
        return []
    stages = rows[0]["protocols"]["feature_equivariance"]["stages"]
    lines = [
        "## Feature equivariance (mean relative error per stage)",
        "",
        "| model | shifts | " + " | ".join(stages) + " |",
        "|---|---|" + "---|" * len(stages),
    ]
    for e in rows:
        fe = e["protocols"]["feature_equivariance"]
        for kind in ("integer", "fractional"):
            if kind in fe:
                cells = " | ".join(f"{fe[kind]['mean'].get(s, float('nan')):.2e}" for s in stages)
                lines.append(f"| {e['name']} | {kind} | {cells} |")
    return lines + [""]


def _throughput_table(entries: list) -> list[str]:
    lines = [
        "## Throughput",
        "",
        "| model | protocol | pairs | seconds | pairs/s |",
        "|---|---|---|---|---|",
    ]
    for e in entries:
        for name, p in e["protocols"].items():
            if isinstance(p, Mapping) and "pairs_per_sec" in p and name != "accuracy":
                lines.append(
                    f"| {e['name']} | {name} | {p['pairs']} | {p['seconds']:.1f} | "
                    f"{p['pairs_per_sec']:.0f} |"
                )
    return lines + [""]


def protocol_notes(report: Mapping) -> list[str]:
    """One line per protocol that ran: what its set is."""
    notes = []
    seen = set()
    for e in report["checkpoints"].values():
        for name, p in e["protocols"].items():
            if name in seen or not isinstance(p, Mapping) or not p.get("description"):
                continue
            seen.add(name)
            notes.append(f"{name}: {p['description']} ({p['num_shifts']} shifts)")
    return notes


def table_text(report: Mapping) -> str:
    """The headline table as aligned plain text, for terminals."""
    entries = list(report["checkpoints"].values())
    cols = ["model"] + [title for _, title in TABLE_COLUMNS]
    rows = [[e["name"]] + [_fmt(e.get(k)) for k, _ in TABLE_COLUMNS] for e in entries]
    widths = [max(len(r[i]) for r in [cols] + rows) for i in range(len(cols))]
    out = [
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in [cols] + rows
    ]
    return "\n".join(out)


def invariance_lines(report: Mapping) -> list[str]:
    """One line per checkpoint whose test accuracy equals its certified accuracy on every
    circular-shift grid that ran (certified invariance), naming those, for terminals."""
    lines = []
    for e in report["checkpoints"].values():
        if not e.get("certified_invariant"):
            continue
        ran = [
            (title, e[key])
            for key, title in TABLE_COLUMNS
            if key in CIRCULAR and e.get(key) is not None
        ]
        equal = " = ".join(title for title, _ in ran)
        lines.append(
            f"{e['name']}: {equal} = {_fmt(ran[0][1])}% -> certified invariance to the "
            "circular shifts of these grids"
        )
    return lines


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def _finite(obj):
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(report: Mapping, path: str | os.PathLike) -> epath.Path:
    path = epath.Path(path)  # local or gs://
    text = json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False)
    path.write_text(text + "\n")
    return path


def _save_figure(fig, path) -> epath.Path:
    """PNG to a local path or an object store (rendered in memory, written in one piece)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    path = epath.Path(path)
    path.write_bytes(buffer.getvalue())
    return path


# ----------------------------------------------------------------------------- plots


def _figure(ncols: int, figsize: tuple[float, float]):
    """A standalone `matplotlib.figure.Figure` with one row of `ncols` axes.

    No pyplot: nothing global changes (a caller's backend, its open figures), and the figure
    is freed with its last reference. `savefig` renders it with the Agg canvas.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols, squeeze=False)


def plot_heatmaps(report: Mapping, protocol: str, title: str, path) -> epath.Path | None:
    """Per-shift accuracy of every model over one grid, one panel per model."""
    panels = [
        (e["name"], e["protocols"][protocol])
        for e in report["checkpoints"].values()
        if protocol in e["protocols"] and "per_shift_accuracy" in e["protocols"][protocol]
    ]
    if not panels:
        return None
    values = [np.asarray(p["per_shift_accuracy"], float) for _, p in panels]
    lo = min(float(np.nanmin(v)) for v in values)
    lo = min(lo, 99.0)
    fig, axes = _figure(len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (name, p), v in zip(axes[0], panels, values):
        dy = p["axes"]["dy"]
        dx = p["axes"]["dx"]
        im = ax.imshow(
            v,
            origin="upper",
            cmap="viridis",
            vmin=lo,
            vmax=100.0,
            extent=(
                dx[0] - 0.5 * _step(dx),
                dx[-1] + 0.5 * _step(dx),
                dy[-1] + 0.5 * _step(dy),
                dy[0] - 0.5 * _step(dy),
            ),
            interpolation="nearest",
        )
        ax.set_title(
            f"{name}\ncertified {p['certified']:.2f}%, min {np.nanmin(v):.2f}%", fontsize=9
        )
        for setter, values in ((ax.set_xticks, dx), (ax.set_yticks, dy)):
            setter(values[:: max(1, -(-len(values) // 8))])
        ax.set_xlabel("dx (pixels)")
        ax.set_ylabel("dy (pixels)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    n = panels[0][1]["heatmap_examples"]
    fig.suptitle(f"Accuracy per {title} ({n} examples)", fontsize=10)
    fig.tight_layout()
    return _save_figure(fig, path)


def _step(values) -> float:
    return float(values[1] - values[0]) if len(values) > 1 else 1.0


def plot_equivariance(report: Mapping, path) -> epath.Path | None:
    """Mean relative equivariance error per stage, integer and fractional shifts, per model."""
    rows = [
        (e["name"], e["protocols"]["feature_equivariance"])
        for e in report["checkpoints"].values()
        if (e["protocols"].get("feature_equivariance") or {}).get("available")
    ]
    if not rows:
        return None
    kinds = [k for k in ("integer", "fractional") if k in rows[0][1]]
    fig, axes = _figure(len(kinds), figsize=(5.0 * len(kinds), 3.8))
    for ax, kind in zip(axes[0], kinds):
        for name, fe in rows:
            stages = fe["stages"]
            mean = [max(fe[kind]["mean"][s], 1e-12) for s in stages]
            worst = [max(fe[kind]["max"][s], 1e-12) for s in stages]
            line = ax.plot(range(len(stages)), mean, marker="o", label=f"{name} (mean)")[0]
            ax.plot(
                range(len(stages)),
                worst,
                ls="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{name} (max)",
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels([f"{s}\n(/{fe['strides'][s]})" for s in stages])
        ax.set_ylabel("relative error")
        ax.set_title(f"{kind} input shifts", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Feature equivariance: ||shift(F(x)) - F(shift(x))|| / ||F(shift(x))||", fontsize=10
    )
    fig.tight_layout()
    return _save_figure(fig, path)


def write_all(report: dict, workdir: str | os.PathLike, *, plots: bool = True) -> dict:
    """Writes the JSON, the markdown and the PNGs into `workdir`; returns {kind: path}."""
    workdir = epath.Path(workdir)  # local or gs://
    workdir.mkdir(parents=True, exist_ok=True)
    files = {}
    if plots:
        for protocol, title in HEATMAPS:
            p = plot_heatmaps(report, protocol, title, workdir / f"{protocol}_heatmap.png")
            if p:
                files[f"{protocol}_heatmap"] = str(p)
        p = plot_equivariance(report, workdir / "feature_equivariance.png")
        if p:
            files["feature_equivariance_plot"] = str(p)
    files["markdown"] = str(workdir / MARKDOWN_FILE)
    files["json"] = str(workdir / JSON_FILE)
    report["files"] = files
    (workdir / MARKDOWN_FILE).write_text(markdown(report))
    write_json(report, workdir / JSON_FILE)
    return files
