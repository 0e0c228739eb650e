"""Device mesh, shardings and global arrays, shared by training and evaluation.

Data parallel over ('data', 'fsdp'), FSDP for large arrays. A leaf module: jax, numpy and
ml_collections only (no input pipeline, no TensorFlow), so that evaluation and analysis can
place arrays exactly as training does.

The mesh has two axes. A batch is split over both (every device gets a slice). A parameter (and
its optimizer moments and EMA, which have the same shapes) with at least `fsdp_min_size`
elements is split over the `fsdp` axis along its largest dimension that the axis divides;
everything else is replicated. With `fsdp = 1` this is plain data parallelism.

Device order: `jax.make_mesh` places the axes on the physical topology (on TPU a ring or torus
per axis, so collectives use neighbouring links). A run over several TPU slices
(`mesh.slices > 1`) splits the `data` axis over the slices, which talk over the data-centre
network (DCN), and keeps `fsdp` (whose all-gathers run every layer) inside a slice, on the
inter-chip links: `mesh_utils.create_hybrid_device_mesh`. Where devices are not on several
slices (GPU clusters, CPU), each process counts as one slice.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA, FSDP = "data", "fsdp"


class MeshConfigError(ValueError):
    """The mesh asked for does not fit the devices or the batch."""


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
    """(data, fsdp) of the mesh `config.mesh` asks for on `num_devices` devices."""
    fsdp = int(config.mesh.fsdp)
    data = int(config.mesh.data)
    slices = num_slices(config)
    if fsdp < 1:
        raise MeshConfigError(f"mesh.fsdp must be >= 1, got {fsdp}")
    if slices < 1:
        raise MeshConfigError(f"mesh.slices must be >= 1, got {slices}")
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
    if data % slices:
        raise MeshConfigError(
            f"mesh.slices={slices} must divide the data axis ({data} = {num_devices} devices / "
            f"fsdp {fsdp}): the data axis is split over the slices and FSDP stays in a slice"
        )
    return data, fsdp


def num_slices(config: ml_collections.ConfigDict) -> int:
    """config.mesh.slices (1 for configs written before the field existed)."""
    slices = config.mesh.get("slices", 1)
    return 1 if slices is None else int(slices)


def _slices_of(devices) -> int:
    """How many slices the devices say they are on (1 when they do not say)."""
    return len({getattr(d, "slice_index", None) for d in devices})


def device_grid(config: ml_collections.ConfigDict, devices) -> np.ndarray:
    """The (data, fsdp) array of `devices` in topology-aware order (see the module doc)."""
    devices = list(devices)
    data, fsdp = mesh_shape(config, len(devices))
    slices, found = num_slices(config), _slices_of(devices)
    if slices == 1:
        if found > 1:
            raise MeshConfigError(
                f"the {len(devices)} devices span {found} slices; set mesh.slices={found} so "
                "that only the data axis crosses the (slower) network between slices"
            )
        try:
            return jax.make_mesh((data, fsdp), (DATA, FSDP), devices=devices).devices
        except ValueError as exc:  # a shape the topology cannot be cut into
            raise MeshConfigError(
                f"cannot lay a mesh data={data} x fsdp={fsdp} on these {len(devices)} "
                f"{devices[0].device_kind} devices ({exc}); try another mesh.fsdp"
            ) from exc
    # TPUs say which slice each chip is on. Elsewhere (GPU, CPU: one slice, or none, however
    # many hosts) the processes are the units connected by the slower network.
    processes = len({d.process_index for d in devices})
    by_process = found == 1 and devices[0].platform != "tpu" and processes == slices
    if found != slices and not by_process:
        other = "" if devices[0].platform == "tpu" else " (or run one process per slice)"
        raise MeshConfigError(
            f"mesh.slices={slices}, but the {len(devices)} {devices[0].platform} devices are on "
            f"{found} slice(s) and {processes} process(es); set mesh.slices={found}{other}"
        )
    return mesh_utils.create_hybrid_device_mesh(
        (data // slices, fsdp), (slices, 1), devices, process_is_granule=by_process
    )


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
    """The ('data', 'fsdp') mesh of `config.mesh` over `devices` (default: all)."""
    grid = device_grid(config, jax.devices() if devices is None else devices)
    # Auto axes: shardings are given to jit (in/out_shardings), not carried by the types.
    return Mesh(grid, (DATA, FSDP), axis_types=(AxisType.Auto, AxisType.Auto))


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


# ----------------------------------------------------------------------------- host <-> global


def data_parallel_mesh(devices=None) -> Mesh:
    """Every device (default: all) on the `data` axis, `fsdp` of size 1: the mesh an
    evaluation gets when the caller brings none."""
    grid = np.asarray(jax.devices() if devices is None else devices).reshape(-1, 1)
    return Mesh(grid, (DATA, FSDP), axis_types=(AxisType.Auto, AxisType.Auto))


def replicate(array, mesh: Mesh) -> jax.Array:
    """A host array (identical on every process) as a replicated global array."""
    a = np.asarray(array)
    return jax.make_array_from_callback(a.shape, replicated(mesh), lambda index: a[index])


def place(tree, mesh: Mesh, min_size: int):
    """A host tree (identical on every process, e.g. restored variables) as global arrays laid
    out by the FSDP rule (`array_sharding`), each process filling its own shards."""

    def put(leaf):
        a = np.asarray(leaf)
        sharding = array_sharding(a.shape, mesh, min_size)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(put, tree)
