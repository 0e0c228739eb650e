"""Orbax variables checkpoints: atomic saves that never clobber, and checked restores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import checkpoints, models
from tests.helpers import random_variables

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=3)


@pytest.fixture(scope="module")
def model_and_vars():
    model = models.create("convnext_afc", **NANO)
    return model, random_variables(model)


def test_save_and_load_model(tmp_path, model_and_vars):
    model, v = model_and_vars
    out = checkpoints.save_variables(
        tmp_path / "ckpt", v, model_name="convnext_afc", model_kwargs=NANO, extra={"note": "x"}
    )
    restored_model, restored, meta = checkpoints.load_model(out)
    assert meta["extra"] == {"note": "x"}
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 32, 32, 3))
    np.testing.assert_array_equal(
        jax.jit(restored_model.apply)(restored, x), jax.jit(model.apply)(v, x)
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


def test_existing_checkpoint_is_never_overwritten_by_default(tmp_path, model_and_vars):
    model, v = model_and_vars
    out = checkpoints.save_variables(
        tmp_path / "ckpt", v, model_name="convnext_afc", model_kwargs=NANO
    )
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        checkpoints.save_variables(out, v, model_name="convnext_afc", model_kwargs=NANO)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    zeros = jax.tree_util.tree_map(jnp.zeros_like, v)
    checkpoints.save_variables(
        out, zeros, model_name="convnext_afc", model_kwargs=NANO, overwrite=True
    )
    restored, _ = checkpoints.load_variables(out, model)
    assert all(float(jnp.abs(a).max()) == 0 for a in jax.tree_util.tree_leaves(restored))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoints.CheckpointNotFoundError, match="convert_torch"):
        checkpoints.load_model(tmp_path / "empty")


def test_restore_checks_shapes_against_the_model(tmp_path, model_and_vars):
    _, v = model_and_vars
    out = checkpoints.save_variables(
        tmp_path / "ckpt", v, model_name="convnext_afc", model_kwargs=NANO
    )
    other = models.create("convnext_afc", depths=(1, 1, 1, 1), dims=(8, 8, 8, 16), num_classes=3)
    with pytest.raises(ValueError, match="does not fit the model"):
        checkpoints.load_variables(out, other)
