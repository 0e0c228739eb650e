"""Mesh sharding: 8 simulated devices (data parallel and FSDP) train like 1 device."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from afc_jax import models
from afc_jax.train import init_state, make_optimizer, make_train_step, sharding
from configs import digits

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 32))
pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)


def config(data=-1, fsdp=1, slices=1):
    c = digits.get_config("model=convnext_baseline_circular")
    c.unlock()
    c.mesh.data, c.mesh.fsdp, c.mesh.fsdp_min_size = data, fsdp, 256
    c.mesh.slices = slices
    c.optim.warmup_epochs = 0
    return c


def run(c, devices, steps=3):
    """Trains `steps` steps on a fixed batch with the state sharded over `devices`."""
    model = models.create("convnext_baseline_circular", num_classes=10, **NANO)
    tx, schedule = make_optimizer(c, steps_per_epoch=10)
    mesh = sharding.make_mesh(c, devices)
    init = lambda r: init_state(model, tx, r, (32, 32, 3))  # noqa: E731
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    state_sh = sharding.state_shardings(abstract, mesh, c.mesh.fsdp_min_size)
    state = jax.jit(init, out_shardings=state_sh)(jax.random.PRNGKey(0))
    data_sh = sharding.batch_sharding(mesh)
    step = jax.jit(
        make_train_step(model, tx, schedule, c, num_classes=10),
        in_shardings=(state_sh, {"image": data_sh, "label": data_sh}, sharding.replicated(mesh)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    rng = np.random.default_rng(0)
    local = {
        "image": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 10, 16).astype(np.int32),
    }
    losses = []
    for _ in range(steps):
        state, metrics = step(state, sharding.global_batch(local, mesh), jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
    return state, state_sh, losses


def max_rel(a, b):
    a, b = jax.device_get(a), jax.device_get(b)
    return max(
        float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def test_data_parallel_and_fsdp_match_one_device():
    one, _, loss_one = run(config(), jax.devices()[:1])
    dp, _, loss_dp = run(config(), jax.devices()[:8])
    fsdp, shardings, loss_fsdp = run(config(data=4, fsdp=2), jax.devices()[:8])
    specs = {s.spec for s in jax.tree_util.tree_leaves(shardings.params)}
    assert any("fsdp" in str(spec) for spec in specs), "FSDP sharded no parameter"
    # Only the summation order differs across devices: the first loss agrees to float32
    # round-off; after three AdamW steps, Adam's division by sqrt(v) amplifies round-off in
    # near-zero gradient entries, so parameters agree to ~1e-4 of their scale.
    np.testing.assert_allclose(loss_dp[0], loss_one[0], rtol=1e-6)
    np.testing.assert_allclose(loss_fsdp[0], loss_one[0], rtol=1e-6)
    np.testing.assert_allclose(loss_dp, loss_one, rtol=1e-4)
    assert max_rel(dp.params, one.params) < 5e-4
    assert max_rel(fsdp.params, one.params) < 5e-4
    assert int(fsdp.step) == int(one.step) == 3


def test_mesh_errors_say_what_to_change():
    with pytest.raises(sharding.MeshConfigError, match="set mesh.data=-1"):
        sharding.make_mesh(config(data=16), jax.devices()[:8])
    with pytest.raises(sharding.MeshConfigError, match="does not divide"):
        sharding.make_mesh(config(fsdp=3), jax.devices()[:8])


def test_fsdp_rule_shards_only_large_divisible_arrays():
    mesh = sharding.make_mesh(config(data=4, fsdp=2), jax.devices()[:8])
    assert sharding.array_sharding((64, 128), mesh, 256).spec == jax.sharding.PartitionSpec(
        None, "fsdp"
    )
    assert sharding.array_sharding((8,), mesh, 256).spec == jax.sharding.PartitionSpec()
    assert sharding.array_sharding((17, 19), mesh, 256).spec == jax.sharding.PartitionSpec()


def test_mesh_is_topology_ordered_with_auto_axes():
    mesh = sharding.make_mesh(config(data=4, fsdp=2), jax.devices()[:8])
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    # jax.make_mesh's order (on CPU: the device order), with Auto axes (shardings via jit)
    expected = jax.make_mesh((4, 2), ("data", "fsdp"), devices=jax.devices()[:8]).devices
    assert [d.id for d in mesh.devices.flat] == [d.id for d in expected.flat]
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What the mesh builders read of a device (a multi-slice pod cannot be simulated on CPU)."""

    id: int
    process_index: int
    slice_index: int | None
    platform: str = "cpu"
    device_kind: str = "cpu"


def _slice_of(grid):
    return np.vectorize(lambda d: d.slice_index if d.slice_index is not None else -1)(grid)


def _process_of(grid):
    return np.vectorize(lambda d: d.process_index)(grid)


def test_two_slices_split_the_data_axis_and_keep_fsdp_inside_a_slice():
    # 8 devices on 2 slices of 2 processes each, listed out of order
    devices = [FakeDevice(i, i // 2, i // 4) for i in (6, 7, 0, 1, 4, 5, 2, 3)]
    grid = sharding.device_grid(config(fsdp=2, slices=2), devices)
    assert grid.shape == (4, 2)
    np.testing.assert_array_equal(_slice_of(grid), [[0, 0], [0, 0], [1, 1], [1, 1]])
    assert sorted(d.id for d in grid.flat) == list(range(8))
    grid = sharding.device_grid(config(fsdp=4, slices=2), devices)
    assert grid.shape == (2, 4)
    np.testing.assert_array_equal(_slice_of(grid), [[0] * 4, [1] * 4])  # fsdp never crosses
    # GPU/CPU devices without slices (no slice_index, or all on slice 0, as in a multi-process
    # CPU run): each process is one slice
    for index in (None, 0):
        one_slice = [FakeDevice(d.id, d.process_index % 2, index) for d in devices]
        grid = sharding.device_grid(config(fsdp=2, slices=2), one_slice)
        np.testing.assert_array_equal(_process_of(grid), [[0, 0], [0, 0], [1, 1], [1, 1]])


def test_slice_settings_that_cannot_work_say_what_to_change():
    devices = [FakeDevice(i, i // 2, i // 4) for i in range(8)]
    with pytest.raises(sharding.MeshConfigError, match="span 2 slices; set mesh.slices=2"):
        sharding.device_grid(config(), devices)
    with pytest.raises(sharding.MeshConfigError, match="on 2 slice.s. and 4 process.es.; set "):
        sharding.device_grid(config(slices=8), devices)
    tpus = [dataclasses.replace(d, platform="tpu", slice_index=0) for d in devices]
    with pytest.raises(sharding.MeshConfigError, match=r"4 process.es.; set mesh.slices=1$"):
        sharding.device_grid(config(slices=4), tpus)  # TPU slices are never guessed
    with pytest.raises(sharding.MeshConfigError, match="mesh.slices=2 must divide the data axis"):
        sharding.device_grid(config(fsdp=8, slices=2), devices)
    with pytest.raises(sharding.MeshConfigError, match="mesh.slices must be >= 1"):
        sharding.device_grid(config(slices=0), devices)
    # the 8 simulated CPU devices: one slice and one process
    with pytest.raises(sharding.MeshConfigError, match=r"set mesh.slices=1 \(or run one process"):
        sharding.make_mesh(config(slices=2), jax.devices()[:8])
