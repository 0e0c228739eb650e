"""Loading the official nano-model fixtures (`tests/fixtures/official/models`, spec §10)."""

from __future__ import annotations

import functools

import numpy as np

from afc_jax import models
from tests.helpers import load_official_npz, nchw_to_nhwc

NANO = dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10)
FIXTURE_FAMILIES = {
    "afc_nano": "convnext_afc",
    "baseline_circular_nano": "convnext_baseline_circular",
    "aps_nano": "convnext_aps",
    "convnext_nano": "convnext",
}
SIZES = ("96x96", "128x128")


@functools.cache
def _load(fixture: str) -> dict:
    return load_official_npz("models", f"{fixture}.npz")


def state_dict(fixture: str) -> dict[str, np.ndarray]:
    """Parameters and buffers under their official keys."""
    arrays = _load(fixture)
    out = {}
    for key, value in arrays.items():
        kind, _, name = key.partition("/")
        if kind in ("param", "buffer"):
            out[name] = value
    return out


def io(fixture: str, size: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(NHWC input, {"logits": ..., "stage0": NHWC, "downsample0": NHWC, ...})."""
    arrays = _load(fixture)
    refs = {"logits": arrays[f"logits/{size}"]}
    for i in range(4):
        for part in ("downsample", "stage"):
            refs[f"{part}{i}"] = nchw_to_nhwc(arrays[f"{part}{i}_nchw/{size}"])
    return nchw_to_nhwc(arrays[f"input_nchw/{size}"]), refs


def nano_model(fixture: str, **kwargs):
    return models.create(FIXTURE_FAMILIES[fixture], **NANO, **kwargs)
