"""Parity with the official PyTorch models on their fixtures (`tests/fixtures/official/models`,
spec §10 of `../shared/spec/README.md`).

Target: logits and every downsample/stage output within 1e-4 relative (max|Δ| / max|ref|) in
float32; measured errors are ~1e-6 (FFT and summation-order round-off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import checkpoints
from afc_jax.checkpoints.torch_writer import write_torch_state_dict
from tests.helpers import rel_err
from tests.models.fixtures import FIXTURE_FAMILIES, SIZES, io, nano_model, state_dict

PARITY_TOL = 1e-4
CASES = [(f, s) for f in FIXTURE_FAMILIES for s in SIZES]


@pytest.mark.parametrize("fixture,size", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_logits_and_every_stage_match_official(fixture, size):
    model = nano_model(fixture)
    variables = checkpoints.from_torch_state_dict(state_dict(fixture), model)
    x, refs = io(fixture, size)
    logits, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(
        variables, jnp.asarray(x)
    )
    got = {"logits": logits}
    got.update({k: v[0] for k, v in state["intermediates"].items() if k in refs})
    errors = {k: rel_err(np.asarray(got[k]), ref) for k, ref in refs.items()}
    print(f"{fixture} {size}: " + ", ".join(f"{k}={e:.1e}" for k, e in errors.items()))
    bad = {k: e for k, e in errors.items() if not e <= PARITY_TOL}
    assert not bad, f"parity errors above {PARITY_TOL}: {bad}"


def test_parity_through_a_pth_file_and_orbax(tmp_path):
    """official keys -> .pth (zip) -> safe reader -> import -> orbax -> load_model -> logits."""
    fixture = "afc_nano"
    pth = write_torch_state_dict(tmp_path / "afc_nano.pth", state_dict(fixture))
    model = nano_model(fixture)
    variables = checkpoints.from_torch_state_dict(checkpoints.read_torch_checkpoint(pth), model)
    out = checkpoints.save_variables(
        tmp_path / "ckpt",
        variables,
        model_name="convnext_afc",
        model_kwargs=dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=10),
    )
    restored_model, restored, meta = checkpoints.load_model(out)
    assert meta["model_name"] == "convnext_afc"
    x, refs = io(fixture, "96x96")
    logits = jax.jit(restored_model.apply)(restored, jnp.asarray(x))
    assert rel_err(np.asarray(logits), refs["logits"]) <= PARITY_TOL
