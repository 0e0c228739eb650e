"""afc_jax.parallel: the mesh, the FSDP rule and host <-> global arrays, on 8 simulated devices.

The mesh layouts themselves (slices, errors) are covered by tests/train/test_sharding.py through
the re-export in afc_jax.train.sharding.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from afc_jax import parallel
from afc_jax.evaluation import Engine, as_classifier
from afc_jax.train import sharding

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)
MIN_SIZE = 256


def fsdp_mesh(fsdp: int = 4):
    config = ml_collections.ConfigDict({"mesh": {"data": -1, "fsdp": fsdp, "slices": 1}})
    return parallel.make_mesh(config)


def host_tree():
    rng = np.random.default_rng(0)
    return {
        "big": rng.standard_normal((64, 128)).astype(np.float32),  # 8192 >= MIN_SIZE
        "odd": rng.standard_normal((17, 19)).astype(np.float32),  # large, but 4 divides neither
        "small": rng.standard_normal((8,)).astype(np.float32),
    }


def test_training_uses_the_same_objects():
    for name in ("make_mesh", "array_sharding", "state_shardings", "batch_sharding", "DATA"):
        assert getattr(sharding, name) is getattr(parallel, name)
    assert sharding.MeshConfigError is parallel.MeshConfigError


def test_data_parallel_mesh_puts_every_device_on_the_data_axis():
    mesh = parallel.data_parallel_mesh()
    assert dict(mesh.shape) == {parallel.DATA: 8, parallel.FSDP: 1}
    assert list(mesh.devices.ravel()) == jax.devices()


def test_place_splits_large_arrays_over_fsdp_and_keeps_the_values():
    mesh = fsdp_mesh(4)
    tree = host_tree()
    placed = parallel.place(tree, mesh, MIN_SIZE)
    assert placed["big"].sharding.spec == PartitionSpec(None, parallel.FSDP)  # largest dim
    assert placed["odd"].sharding.spec == PartitionSpec()
    assert placed["small"].sharding.spec == PartitionSpec()
    shard = placed["big"].addressable_shards[0]
    assert shard.data.shape == (64, 32)
    for key, value in tree.items():
        np.testing.assert_array_equal(np.asarray(placed[key]), value)


def test_place_replicates_everything_without_an_fsdp_axis():
    placed = parallel.place(host_tree(), parallel.data_parallel_mesh(), MIN_SIZE)
    assert all(a.sharding.is_fully_replicated for a in jax.tree_util.tree_leaves(placed))


def test_replicate_and_global_batch_round_trip():
    mesh = fsdp_mesh(2)
    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    rep = parallel.replicate(table, mesh)
    assert rep.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(rep), table)
    local = {"image": np.ones((16, 4, 4, 3), np.float32), "label": np.arange(16, dtype=np.int32)}
    batch = parallel.global_batch(local, mesh)
    assert batch["label"].sharding == parallel.batch_sharding(mesh)
    assert len({s.device for s in batch["label"].addressable_shards}) == 8
    np.testing.assert_array_equal(np.asarray(batch["label"]), local["label"])


def test_evaluation_places_variables_by_the_training_rule():
    """The engine that evaluates checkpoints lays variables out like training's state."""
    mesh = fsdp_mesh(4)
    tree = host_tree()
    clf = as_classifier(lambda x: x[:, 0, 0, :], name="probe")
    clf.variables = tree
    engine = Engine(clf, mesh, fsdp_min_size=MIN_SIZE)
    want = parallel.state_shardings(tree, mesh, MIN_SIZE)
    got = jax.tree_util.tree_map(lambda a: a.sharding, engine.variables)
    assert got == want
    other = engine.with_variables(jax.tree_util.tree_map(lambda a: a + 1, tree))
    assert jax.tree_util.tree_map(lambda a: a.sharding, other.variables) == want
    np.testing.assert_array_equal(np.asarray(other.variables["big"]), tree["big"] + 1)
