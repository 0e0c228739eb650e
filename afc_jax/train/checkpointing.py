"""Orbax training checkpoints: periodic (async) saves, keep-N, resume from the latest.

Checkpoints live in `<workdir>/checkpoints/<step>/`. Orbax writes each one to a temporary
directory and renames it when complete, so a crash mid-save never leaves a checkpoint that
looks finished; `max_to_keep` only deletes old checkpoints after a newer one is committed.
Restores take the abstract state with the *current* shardings, so a checkpoint written on one
mesh restores onto another (different device count or FSDP layout).
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def make_manager(workdir: str, *, keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def save(manager: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> bool:
    return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
    """(state, step) from the newest checkpoint, or (None, None) when there is none."""
    step = manager.latest_step()
    if step is None:
        return None, None
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    return state, step


def abstract_with_shardings(abstract_state, shardings):
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )


def checkpoint_steps(workdir: str) -> list[int]:
    """Steps of the committed checkpoints in `workdir` (oldest first)."""
    manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def load_raw_state(workdir: str, step: int | None = None):
    """The saved train state as host arrays (no model or mesh needed), and its step."""
    manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
        return manager.restore(step, args=ocp.args.StandardRestore()), step
    finally:
        manager.close()
