"""Device mesh and shardings: data parallel over ('data', 'fsdp'), FSDP for large arrays.

The mesh has two axes. A batch is split over both (every device gets a slice). A parameter (and
its optimizer moments and EMA, which have the same shapes) with at least `fsdp_min_size`
elements is split over the `fsdp` axis along its largest dimension that the axis divides;
everything else is replicated. With `fsdp = 1` this is plain data parallelism.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, FSDP = "data", "fsdp"


class MeshConfigError(ValueError):
    """The mesh asked for does not fit the devices or the batch."""


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
    fsdp = int(config.mesh.fsdp)
    data = int(config.mesh.data)
    if fsdp < 1:
        raise MeshConfigError(f"mesh.fsdp must be >= 1, got {fsdp}")
    if data == -1:
        if num_devices % fsdp:
            raise MeshConfigError(
                f"mesh.fsdp={fsdp} does not divide the {num_devices} available devices"
            )
        data = num_devices // fsdp
    if data * fsdp != num_devices:
        raise MeshConfigError(
            f"mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but {num_devices} are "
            f"available; set mesh.data=-1 to use all of them, or change mesh.fsdp"
        )
    return data, fsdp


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    data, fsdp = mesh_shape(config, len(devices))
    return Mesh(np.asarray(devices).reshape(data, fsdp), (DATA, FSDP))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, PartitionSpec((DATA, FSDP)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def array_sharding(shape, mesh: Mesh, min_size: int) -> NamedSharding:
    """FSDP rule for one array shape."""
    fsdp = mesh.shape[FSDP]
    if fsdp == 1 or int(np.prod(shape)) < min_size:
        return replicated(mesh)
    for dim in np.argsort(shape)[::-1]:
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = FSDP
            return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)


def state_shardings(abstract_state, mesh: Mesh, min_size: int):
    """Shardings for every leaf of a (abstract) train state."""
    return jax.tree_util.tree_map(
        lambda leaf: array_sharding(tuple(leaf.shape), mesh, min_size), abstract_state
    )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assembles a global array from each process's local slice of the batch."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
