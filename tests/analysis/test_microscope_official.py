"""The microscope on the official ablation models (fixture weights and inputs, 96x96): its logits
error for a (1, 1) roll is the official models' own measured shift sensitivity (spec §11,
`measured` in `tests/fixtures/official/ablations/index.json`), and it finds where each rung's
aliasing enters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afc_jax import checkpoints, models
from afc_jax.analysis import examine, first_aliasing_layer
from tests.analysis.test_microscope import ENTRY, ROUND_OFF
from tests.helpers import nchw_to_nhwc, official_fixture
from tests.models.test_ablation_parity import ABLATION_FAMILIES, NANO, _arrays, _state_dict

SIZE = "96x96"


@pytest.mark.parametrize("fixture", list(ABLATION_FAMILIES))
def test_microscope_reproduces_the_official_measurements(fixture):
    family = ABLATION_FAMILIES[fixture]
    model = models.create(family, **NANO)
    variables = checkpoints.from_torch_state_dict(_state_dict(fixture), model)
    images = nchw_to_nhwc(_arrays(fixture)[f"input_nchw/{SIZE}"])
    report, _ = examine(model, variables, images, spectra=False)
    index = json.loads(official_fixture("ablations", "index.json").read_text())
    official = index["measured"][fixture]["per_size"][SIZE]["roll1"]
    got = report["logits"]["integer"]
    print(f"{fixture}: logits roll (1,1) {got:.3e}, official {official:.3e}")
    if official < 1e-10:  # float64 round-off in the official run; float32 here
        assert got < ROUND_OFF
        assert first_aliasing_layer(report, "half_pixel", ROUND_OFF) is None
    else:
        np.testing.assert_allclose(got, official, rtol=1e-3)
        assert first_aliasing_layer(report, "half_pixel", ROUND_OFF) == ENTRY[family][0]
