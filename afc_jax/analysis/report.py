"""Microscope reports: JSON, a markdown table, and plots drawn on `matplotlib.figure.Figure`
objects (no pyplot state), rendered with the Agg canvas and written through epath (local or
gs://)."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath

from afc_jax.analysis.spectrum import Spectrum


def write_json(reports: Sequence[Mapping], path: str | os.PathLike) -> epath.Path:
    path = epath.Path(path)
    path.write_text(json.dumps({"models": list(reports)}, indent=2) + "\n")
    return path


def _e(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1e}"


def markdown(reports: Sequence[Mapping]) -> str:
    """One summary table (worst layer per model) and one per-layer table per model."""
    lines = [
        "# Aliasing microscope",
        "",
        "Equivariance error: max |f(shift(x, d)) - shift(f(x), d/stride)| / max |f(x)| per layer "
        "(logits: invariance). Aliasing: fraction of a nonlinearity's output energy above the "
        "Nyquist frequency of the grid it is sampled on, and the part of it that folds into the "
        "band the next layers keep.",
        "",
        "| model | worst layer (integer) | error | worst layer (half-pixel) | error "
        "| logits integer | logits half-pixel |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        w = r["worst"]
        lines.append(
            f"| {r['label']} | {w['integer']['layer']} | {_e(w['integer']['error'])} | "
            f"{w['half_pixel']['layer']} | {_e(w['half_pixel']['error'])} | "
            f"{_e(r['logits']['integer'])} | {_e(r['logits']['half_pixel'])} |"
        )
    for r in reports:
        lines += [
            "",
            f"## {r['label']} ({r['model']}, image {tuple(r['image_shape'])})",
            "",
            "| layer | stride | integer | half-pixel | nonlinearity | above band | aliased "
            "into kept band |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["layers"]:
            lines.append(
                f"| {row['name']} | {row['stride']} | {_e(row['errors'].get('integer'))} | "
                f"{_e(row['errors'].get('half_pixel'))} | {row.get('nonlinearity', '')} | "
                f"{_e(row.get('above_band'))} | {_e(row.get('aliased_into_kept_band'))} |"
            )
    return "\n".join(lines) + "\n"


def _save(fig, path) -> epath.Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    path = epath.Path(path)
    path.write_bytes(buffer.getvalue())
    return path


def plot_layer_errors(reports: Sequence[Mapping], path, shift: str = "half_pixel"):
    """Per-layer equivariance error of several models on one log-scale chart."""
    from matplotlib.figure import Figure

    names = [row["name"] for row in max(reports, key=lambda r: len(r["layers"]))["layers"]]
    fig = Figure(figsize=(max(8, 0.22 * len(names)) + 2.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for r in reports:
        pos = {row["name"]: row["errors"][shift] for row in r["layers"]}
        xs = [i for i, n in enumerate(names) if n in pos]
        ax.plot(xs, [max(pos[names[i]], 1e-9) for i in xs], marker=".", label=r["label"])
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel(f"equivariance error ({shift.replace('_', '-')} shift)")
    ax.axhline(1e-5, color="gray", lw=0.6, ls=":")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Where each network aliases (1e-5: float32 round-off level)")
    return _save(fig, path)


def plot_spectrum(s: Spectrum, title: str, path):
    """log10 power before/after a nonlinearity, with the sampled grid's Nyquist band (solid)
    and the band kept by the next layers (dashed) marked."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(9, 4.3), layout="constrained")
    mh, mw = s.after.shape
    n_h, n_w = mh // s.fine, mw // s.fine  # layer grid size
    extent = (-mw / 2 / n_w, mw / 2 / n_w, -mh / 2 / n_h, mh / 2 / n_h)  # in layer-grid bands
    for k, (label, power) in enumerate((("before", s.before), ("after", s.after))):
        ax = fig.add_subplot(1, 2, k + 1)
        img = np.log10(np.fft.fftshift(power) + 1e-12 * power.max())
        im = ax.imshow(img, extent=extent, origin="lower", cmap="magma")
        fig.colorbar(im, ax=ax, shrink=0.8, label="log10 power")
        half = s.sample / 2
        ax.add_patch(Rectangle((-half, -half), 2 * half, 2 * half, fill=False, ec="cyan", lw=1.2))
        kh = half * s.keep
        ax.add_patch(Rectangle((-kh, -kh), 2 * kh, 2 * kh, fill=False, ec="lime", lw=1, ls="--"))
        ax.set_title(f"{label} the nonlinearity")
        ax.set_xlabel("cycles per layer-grid pixel (layer Nyquist = 0.5)")
    fig.suptitle(f"{title}: solid = Nyquist band of the sampling grid, dashed = band kept")
    return _save(fig, path)


def write_all(reports: Sequence[Mapping], spectra: Mapping, workdir) -> dict[str, str]:
    """microscope.json, microscope.md, layer_errors_<shift>.png and spectrum_<label>_<layer>.png."""
    out = epath.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": write_json(reports, out / "microscope.json"),
        "markdown": out / "microscope.md",
    }
    files["markdown"].write_text(markdown(reports))
    for shift in ("integer", "half_pixel"):
        files[f"errors_{shift}"] = plot_layer_errors(
            reports, out / f"layer_errors_{shift}.png", shift
        )
    for (label, layer), s in spectra.items():
        files[f"spectrum {label} {layer}"] = plot_spectrum(
            s, f"{label} {layer}", out / f"spectrum_{label}_{layer.replace('.', '_')}.png"
        )
    return {k: os.fspath(v) for k, v in files.items()}
