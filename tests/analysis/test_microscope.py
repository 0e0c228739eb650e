"""The aliasing microscope on nano models: ~0 (float32 round-off) for AFC at every layer, and
clearly more than 0 for each rung that aliases, first at the layer where its aliasing enters."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from afc_jax import models
from afc_jax.analysis import examine, first_aliasing_layer
from afc_jax.analysis.probes import Nonlinearity
from afc_jax.analysis.spectrum import band_fractions, spectrum
from tests.helpers import REPO_ROOT, random_variables

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16), num_classes=4)
SIZE = 32
ROUND_OFF = 1e-5  # float32, ~25 FFT round trips
ALIASING = 1e-3  # what "clearly more than 0" means here; measured values are 1e-2..1
# Energy fractions are squares of amplitudes, and exact zeros come out at ~1e-14: measured
# 3e-5 (GELU on the 2x grid) to 2e-1.
ALIASED_ENERGY = 1e-6

# family -> (first layer whose half-pixel error is above ROUND_OFF, the nonlinearity there)
ENTRY = {
    # plain subsampling, folded into the stem conv (stride 4): aliasing without a nonlinearity
    "convnext_baseline_circular": ("stem.conv", None),
    "convnext_blurpool": ("stem", "layernorm_C"),
    "convnext_ideal_lpf": ("stem", "layernorm_C"),  # ideal stem, but a per-pixel norm
    "convnext_afc_ln_c": ("stem", "layernorm_C"),
    "convnext_ideal_lpf_afln": ("s0.b0.act", "gelu"),  # the first GELU
    "convnext_afc_poly1x": ("s0.b0.act", "polynomial"),  # the polynomial at 1x
    "convnext_afc_upgelu": ("s0.b0.act", "gelu"),  # GELU on the 2x grid: less, but not 0
}


@functools.cache
def _report(family: str):
    model = models.create(family, **NANO)
    variables = random_variables(model, (SIZE, SIZE), seed=1)
    images = jax.random.normal(jax.random.PRNGKey(0), (2, SIZE, SIZE, 3))
    report, spectra = examine(model, variables, images, keep_spectra=("s0.b0.act",))
    return report, spectra


@pytest.mark.parametrize("family", ["convnext_afc", "convnext_afc_nostem"])
def test_alias_free_models_are_equivariant_at_every_layer(family):
    report, _ = _report(family)
    assert len(report["layers"]) == 1 + (family == "convnext_afc") + 1 + 3 * 2 + 4 * 4 + 1
    for row in report["layers"]:
        for shift, err in row["errors"].items():
            assert err < ROUND_OFF, (row["name"], shift, err)
        if "aliased_into_kept_band" in row:
            assert row["aliased_into_kept_band"] < 1e-9, row
            if row["nonlinearity"] != "stem_polynomial":  # its product folds, but not into
                assert row["above_band"] < 1e-9, row  # the band the stem's filter keeps
    assert first_aliasing_layer(report) is None


@pytest.mark.parametrize("family", list(ENTRY))
def test_aliasing_rungs_alias_where_their_aliasing_enters(family):
    report, _ = _report(family)
    layer, kind = ENTRY[family]
    rows = {row["name"]: row for row in report["layers"]}
    assert first_aliasing_layer(report, "half_pixel", ROUND_OFF) == layer
    assert rows[layer]["errors"]["half_pixel"] > ALIASING
    if kind is None:
        assert "nonlinearity" not in rows[layer]
    else:
        assert rows[layer]["nonlinearity"] == kind
        assert rows[layer]["aliased_into_kept_band"] > ALIASED_ENERGY
    # ... and the logits are no longer invariant.
    assert report["logits"]["half_pixel"] > ROUND_OFF


def test_gelu_on_the_2x_grid_aliases_less_than_at_1x():
    at_1x = {r["name"]: r for r in _report("convnext_ideal_lpf_afln")[0]["layers"]}["s0.b0.act"]
    at_2x = {r["name"]: r for r in _report("convnext_afc_upgelu")[0]["layers"]}["s0.b0.act"]
    assert at_2x["aliased_into_kept_band"] < at_1x["aliased_into_kept_band"]
    _, spectra = _report("convnext_afc_upgelu")
    assert spectra["s0.b0.act"].sample == 2 and spectra["s0.b0.act"].keep == 0.5


def _cosine_square(k0: int, n: int, eval_factor: int):
    t = np.arange(n)
    wave = np.cos(2 * np.pi * k0 * t / n).astype(np.float32)
    x = np.broadcast_to(wave[:, None, None] * wave[None, :, None], (n, n, 1))[None]
    keep = 1.0 / eval_factor
    return Nonlinearity("sq", "square", x, lambda f, ch: np.square, eval_factor, keep, True)


@pytest.mark.parametrize(
    "k0,eval_factor,above,kept",
    [
        (1, 1, 0.0, 0.0),  # 2 k0 = 2 < 8/2: nothing above the band
        (3, 1, 1.0, 1.0),  # every non-constant term at +-6 (and +-6, 0) folds to +-2: kept
        (3, 2, 0.0, 0.0),  # on the 2x grid (16 samples) +-6 fits: AFC's argument
    ],
)
def test_band_fractions_of_a_squared_cosine(k0, eval_factor, above, kept):
    s = spectrum(_cosine_square(k0, 8, eval_factor), oversample=4)
    got = band_fractions(s)
    np.testing.assert_allclose(got["above_band"], above, atol=1e-6)
    np.testing.assert_allclose(got["aliased_into_kept_band"], kept, atol=1e-6)


def test_command_writes_json_markdown_and_plots(tmp_path):
    out = tmp_path / "micro"
    cmd = [
        sys.executable,
        "-m",
        "afc_jax.analysis",
        "--config",
        "configs/digits.py",
        "--models=convnext_afc,convnext_ideal_lpf_afln",
        "--image_size=32",
        "--batch=1",
        "--spectrum_layers=s0.b0.act",
        f"--workdir={out}",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "microscope.json").read_text())
    labels = [m["label"] for m in data["models"]]
    assert labels == ["convnext_afc", "convnext_ideal_lpf_afln"]
    afc, lpf = data["models"]
    assert afc["worst"]["half_pixel"]["error"] < ROUND_OFF
    assert first_aliasing_layer(lpf, "half_pixel", ROUND_OFF) == "s0.b0.act"
    assert "| s0.b0.act | 4 |" in (out / "microscope.md").read_text()
    for name in (
        "layer_errors_integer.png",
        "layer_errors_half_pixel.png",
        "spectrum_convnext_afc_s0_b0_act.png",
        "spectrum_convnext_ideal_lpf_afln_s0_b0_act.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
