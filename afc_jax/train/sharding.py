"""Device mesh and shardings for training: re-exported from `afc_jax.parallel`, which
evaluation and analysis share (see its docstring for the mesh layout and the FSDP rule)."""

from afc_jax.parallel import (
    DATA,
    FSDP,
    MeshConfigError,
    array_sharding,
    batch_sharding,
    device_grid,
    global_batch,
    make_mesh,
    mesh_shape,
    num_slices,
    replicated,
    state_shardings,
)

__all__ = [
    "DATA",
    "FSDP",
    "MeshConfigError",
    "array_sharding",
    "batch_sharding",
    "device_grid",
    "global_batch",
    "make_mesh",
    "mesh_shape",
    "num_slices",
    "replicated",
    "state_shardings",
]
