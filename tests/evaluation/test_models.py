"""The protocols on real (nano) ConvNeXts: AFC is certified invariant and equivariant, the
circular baseline is not."""

from __future__ import annotations

import numpy as np
import pytest

from afc_jax import evaluation as ev_lib
from afc_jax import models
from tests.evaluation import fakes
from tests.helpers import random_variables

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16), num_classes=fakes.NUM_CLASSES)
N, BATCH = 12, 16  # one padded batch, 2 rows per simulated device


def settings():
    ev = ev_lib.eval_config()
    ev.max_shift = 2  # official sets: integer (0, 0), (1, 1); half-pixel (-1/2, -1/2)
    ev.fractional_denominators = (3,)  # (1/3, 1/3), (1/3, 2/3), ...
    ev.chunk_size = 4
    ev.heatmap_examples = -1
    ev.equivariance_examples = 8
    ev.equivariance_integer_shifts = ((0, 1), (3, 5))
    ev.equivariance_fractional_shifts = ((0.5, 0.5), (1 / 3, 2 / 3))
    return ev


def images():
    return np.random.default_rng(0).standard_normal((N, 32, 32, 3)).astype(np.float32)


def labelled_by(engine, x):
    """Labels = the model's own unshifted predictions (so accuracy is 100 %)."""
    padded = np.concatenate([x, np.zeros((BATCH - N,) + x.shape[1:], np.float32)])
    batch = engine.make_batch(
        0,
        {
            "image": padded,
            "label": np.zeros(BATCH),
            "valid": np.ones(BATCH, bool),
            "pos": np.arange(BATCH),
        },
    )
    return np.asarray(batch.logits).argmax(-1)[:N]


@pytest.fixture(scope="module")
def afc_result():
    model = models.create("convnext_afc", **NANO)
    clf = ev_lib.as_classifier(model, random_variables(model))
    engine = ev_lib.Engine(clf)
    x = images()
    labels = labelled_by(engine, x)
    names = [
        "accuracy",
        "integer_grid",
        "half_pixel_grid",
        "fractional_grid",
        "feature_equivariance",
    ]
    protocols = ev_lib.build_protocols(settings(), 32, names)
    return ev_lib.evaluate(None, fakes.eval_batches(x, labels, BATCH), protocols, engine=engine)


def test_afc_nano_is_certified_invariant(afc_result):
    out = afc_result["protocols"]
    assert out["accuracy"]["top1"] == 100.0 and out["accuracy"]["count"] == N
    for name in ("integer_grid", "half_pixel_grid", "fractional_grid"):
        assert out[name]["certified"] == 100.0, name
        assert out[name]["count"] == N
    assert afc_result["throughput"]["pairs"] > 0


def test_afc_nano_features_are_equivariant(afc_result):
    fe = afc_result["protocols"]["feature_equivariance"]
    assert fe["available"] and fe["count"] == 8
    assert fe["stages"] == ["stage0", "stage1", "stage2", "stage3"]
    for kind in ("integer", "fractional"):
        for stage in fe["stages"]:
            assert fe[kind]["max"][stage] < 1e-4, (kind, stage, fe[kind]["max"][stage])


def test_circular_baseline_features_alias():
    model = models.create("convnext_baseline_circular", **NANO)
    x = images()
    protocols = ev_lib.build_protocols(settings(), 32, ["feature_equivariance"])
    out = ev_lib.evaluate(
        model,
        fakes.eval_batches(x, np.zeros(N, int), BATCH),
        protocols,
        variables=random_variables(model),
    )
    fe = out["protocols"]["feature_equivariance"]
    # stage 0 (stride 4) is exactly equivariant to no shift of the set; later stages alias
    assert max(fe["fractional"]["mean"].values()) > 1e-3
    assert max(fe["integer"]["mean"].values()) > 1e-3
