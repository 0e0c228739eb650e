"""The aliasing microscope: per-layer equivariance errors and aliasing spectra of a model."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from afc_jax.analysis.equivariance import DEFAULT_SHIFTS, layer_errors, shifted_inputs
from afc_jax.analysis.probes import layers_of, nonlinearities, probe
from afc_jax.analysis.spectrum import Spectrum, band_fractions, spectrum


def examine(
    model,
    variables,
    images: jax.Array,
    *,
    shifts: Sequence = DEFAULT_SHIFTS,
    spectra: bool = True,
    oversample: int = 4,
    max_channels: int | None = 64,
    keep_spectra: Sequence[str] = (),
) -> tuple[dict, dict[str, Spectrum]]:
    """Measures `model` layer by layer on NHWC `images`.

    Returns:
      report: {"layers": [{"name", "stride", "errors": {shift: err}, ["nonlinearity": kind,
        "above_band", "aliased_into_kept_band"]}], "worst": {shift: (layer, err)} over the
        layers before the logits, "logits": {shift: err}, "shifts": {name: [dy, dx]}}.
      spectra: the `Spectrum` of each nonlinearity named in `keep_spectra` (for plots).
    """
    t0 = time.time()
    batch = images.shape[0]
    x = shifted_inputs(jnp.asarray(images, jnp.float32), shifts)
    maps, inputs = jax.jit(lambda v, x: probe(model, v, x))(variables, x)
    layers = layers_of(model)
    errors = layer_errors(maps, layers, shifts, batch)
    logging.info("equivariance of %d layers in %.1fs", len(layers), time.time() - t0)
    rows = {
        layer.name: {"name": layer.name, "stride": layer.stride, "errors": errors[layer.name]}
        for layer in layers
    }
    kept: dict[str, Spectrum] = {}
    if spectra:
        t0 = time.time()
        first = {k: v[:batch] for k, v in inputs.items()}
        for nl in nonlinearities(model, variables, first):
            s = spectrum(nl, oversample=oversample, max_channels=max_channels)
            rows[nl.name].update(nonlinearity=nl.kind, **band_fractions(s))
            if nl.name in keep_spectra:
                kept[nl.name] = s
        logging.info("aliasing spectra in %.1fs", time.time() - t0)
    worst = {}
    for name, _ in shifts:
        inner = [(r["errors"][name], r["name"]) for r in rows.values() if r["name"] != "logits"]
        err, layer = max(inner)
        worst[name] = {"layer": layer, "error": err}
    report = {
        "model": model.family.name,
        "depths": list(model.depths),
        "dims": list(model.dims),
        "image_shape": list(images.shape),
        "shifts": {name: list(d) for name, d in shifts},
        "layers": list(rows.values()),
        "worst": worst,
        "logits": rows["logits"]["errors"],
    }
    return report, kept


def first_aliasing_layer(report: dict, shift: str = "half_pixel", threshold: float = 1e-4):
    """Name of the first layer whose equivariance error exceeds `threshold`, or None."""
    for row in report["layers"]:
        if row["errors"][shift] > threshold:
            return row["name"]
    return None
