"""A training run's saved state, read without its model, mesh or optimizer; its checksums.

Training (`afc_jax.train.checkpointing`) writes orbax checkpoints of the train state into
`<workdir>/checkpoints/<step>/` and records in each one's metadata a checksum of every array
(`CHECKSUMS_KEY`: two 32-bit sums over the raw bits, one position-weighted, independent of the
sharding). This module holds those checksums and reads a checkpoint directory back as host
arrays, verifying them: what evaluation needs from a training run, without importing the
training package (and its input pipeline).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

CHECKSUMS_KEY = "afc_jax_checksums"  # custom metadata: {leaf path: [sum, position-weighted sum]}
_SHOWN = 5  # mismatching leaves named in an error message


class CheckpointCorruptError(RuntimeError):
    """A checkpoint cannot be read or fails its integrity check."""


class NoTrainingCheckpointError(FileNotFoundError):
    """The checkpoint directory holds no committed checkpoint (or not the step asked for)."""


# ----------------------------------------------------------------------------- checksums


def leaf_path_name(path) -> str:
    """'params/stages_0/...' for TrainState attributes, dict keys and sequence indices alike."""
    parts = []
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _leaf_checksum(x) -> jax.Array:
    """[sum of the raw bits, sum of raw bits * (1 + flat index)], both mod 2**32."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        u = x.astype(jnp.uint32)
    else:
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
        u = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    index = jnp.zeros(x.shape, jnp.uint32)
    stride = 1
    for d in reversed(range(x.ndim)):  # flat index from iotas: no reshape of sharded arrays
        if x.shape[d] > 1:
            index = index + jax.lax.broadcasted_iota(jnp.uint32, x.shape, d) * jnp.uint32(stride)
        stride = (stride * x.shape[d]) % 2**32
    return jnp.stack([jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * (index + 1), dtype=jnp.uint32)])


@functools.lru_cache(maxsize=16)
def _checksum_fn(out_sharding):
    """One jitted function per output sharding (jit then caches one executable per layout)."""
    return jax.jit(
        lambda xs: jnp.stack([_leaf_checksum(x) for x in xs]), out_shardings=out_sharding
    )


def _host_leaf_checksum(x) -> list[int]:
    """The same two sums as `_leaf_checksum`, in numpy (blocks of 2**24 elements)."""
    a = np.asarray(x)
    u = a.astype(np.uint32) if a.dtype == np.bool_ else a.view(f"u{a.dtype.itemsize}")
    u = u.reshape(-1)
    s1 = s2 = 0
    block = 1 << 24
    for start in range(0, u.size, block):
        part = u[start : start + block].astype(np.uint64)
        index = (np.arange(start, start + part.size, dtype=np.uint64) % 2**32 + 1) % 2**32
        s1 = (s1 + int(part.sum(dtype=np.uint64))) % 2**32
        s2 = (s2 + int((part * index).sum(dtype=np.uint64))) % 2**32  # wraps mod 2**64
    return [s1, s2]


def _checksummable(x) -> bool:
    return hasattr(x, "dtype") and np.dtype(x.dtype).itemsize in (1, 2, 4)


def checksums(tree, *, on_device: bool | None = None) -> dict[str, list[int]]:
    """{leaf path: [s1, s2]} of every 1/2/4-byte array leaf; identical on any mesh.

    A tree of device arrays (the train state) is summed where it lives, by one jitted program
    that returns only the 2 x 4 bytes per leaf: the training thread never copies the state to
    the host for this, and multi-process runs need no array that is not addressable here. Host
    trees (numpy, e.g. `read_training_state`) are summed with numpy, without compiling anything.
    `on_device` forces one way.
    """
    flat = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if _checksummable(x)]
    if not flat:
        return {}
    if on_device is None:
        on_device = jax.process_count() > 1 or any(isinstance(x, jax.Array) for _, x in flat)
    if not on_device:
        return {leaf_path_name(p): _host_leaf_checksum(x) for p, x in flat}
    leaves = [x for _, x in flat]
    out_sharding = None
    sharding = getattr(leaves[0], "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        out_sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    sums = np.asarray(jax.device_get(_checksum_fn(out_sharding)(leaves)))
    return {leaf_path_name(p): [int(a), int(b)] for (p, _), (a, b) in zip(flat, sums)}


def verify(tree, expected: dict | None, what: str) -> bool:
    """Raises CheckpointCorruptError on a mismatch; False when there is nothing to verify."""
    if not expected:
        return False
    actual = checksums(tree)
    missing = sorted(set(expected) - set(actual))
    bad = sorted(k for k in expected if k in actual and list(actual[k]) != list(expected[k]))
    if missing or bad:
        detail = []
        if bad:
            detail.append(f"{len(bad)} array(s) differ from what was saved (e.g. {bad[:_SHOWN]})")
        if missing:
            detail.append(f"{len(missing)} array(s) missing (e.g. {missing[:_SHOWN]})")
        raise CheckpointCorruptError(f"{what}: integrity check failed: {'; '.join(detail)}")
    return True


# ----------------------------------------------------------------------------- reading


def _absolute(directory) -> str:
    """Local paths made absolute; URLs (gs://...) as they are."""
    directory = os.fspath(directory)
    return directory if "://" in directory else os.path.abspath(os.path.expanduser(directory))


def read_only_manager(directory) -> ocp.CheckpointManager:
    """An orbax manager of a checkpoint directory (`<workdir>/checkpoints`) that writes nothing."""
    return ocp.CheckpointManager(
        _absolute(directory),
        item_handlers=ocp.StandardCheckpointHandler(),
        # the read-only values of these options stated, so that orbax does not warn it set them
        options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
    )


def training_steps(directory) -> list[int]:
    """Steps of the committed checkpoints in `directory` (oldest first)."""
    manager = read_only_manager(directory)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def read_training_state(directory, step: int | None = None, *, verify_checksums: bool = True):
    """(state, step): the train state saved in `directory` at `step` (default: the newest) as
    host arrays, with no model or mesh needed.

    Verifies the checksums recorded at save time (CheckpointCorruptError on a mismatch);
    NoTrainingCheckpointError (a FileNotFoundError) when the directory holds no checkpoint
    or not that step.
    """
    manager = read_only_manager(directory)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise NoTrainingCheckpointError(f"no checkpoint in {directory}")
        steps = sorted(manager.all_steps())
        if step not in steps:
            raise NoTrainingCheckpointError(f"no checkpoint {step} in {directory} (has {steps})")
        state = manager.restore(step, args=ocp.args.StandardRestore())
        if verify_checksums:
            custom = manager.metadata(step).custom_metadata or {}
            verify(state, custom.get(CHECKSUMS_KEY), f"checkpoint {step} in {directory}")
        return state, step
    finally:
        manager.close()
