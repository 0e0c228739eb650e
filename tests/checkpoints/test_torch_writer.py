"""The torch-free .pth writer: read back by our reader and, when installed, by torch itself."""

from __future__ import annotations

import numpy as np
import pytest

from afc_jax.checkpoints import read_torch_checkpoint
from afc_jax.checkpoints.torch_writer import write_torch_file, write_torch_state_dict

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def sample():
    rng = np.random.default_rng(0)
    return {f"t{i}": (rng.normal(size=(2, 3)) * 10).astype(dt) for i, dt in enumerate(DTYPES)}


def test_round_trip_through_our_reader(tmp_path):
    sd = sample()
    got = read_torch_checkpoint(write_torch_state_dict(tmp_path / "a.pth", sd))
    assert list(got) == list(sd)
    for k in sd:
        assert got[k].dtype == sd[k].dtype
        np.testing.assert_array_equal(got[k], sd[k])


@pytest.mark.optional_dependency("torch")
def test_torch_loads_it_with_weights_only(tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed: cross-check skipped")
    sd = sample()
    path = write_torch_file(tmp_path / "b.pth", {"model": sd, "epoch": 3})
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3
    for k in sd:
        np.testing.assert_array_equal(loaded["model"][k].numpy(), sd[k])


def test_unsupported_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="obj.x"):
        write_torch_file(tmp_path / "c.pth", {"x": object()})
