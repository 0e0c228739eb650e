"""Orbax training checkpoints that survive crashes, full disks and bit rot.

Checkpoints live in `<workdir>/checkpoints/<step>/`.

- Atomic saves: orbax writes each checkpoint into a temporary directory and renames it when
  complete, so a crash mid-save never leaves a checkpoint that looks finished (the leftover
  temporary directory is removed on the next start).
- Keep-N without risk: old checkpoints are deleted by `TrainCheckpoints` itself, only after a
  newer one is committed (waited for, listed on disk); a failed or killed save never costs the
  last good checkpoint, whatever `keep` is.
- Integrity: every save records a checksum of each array (two 32-bit sums over the raw bits,
  one position-weighted, independent of the sharding) in the checkpoint's metadata. They are
  computed on the devices, next to the state, and only the sums are fetched (no host copy of
  the state on the training thread). A restore verifies them, so truncated, garbage or
  bit-flipped files are detected.
- Fallback: a checkpoint that cannot be read or fails verification is reported, moved to
  `<workdir>/checkpoints_corrupt/`, and the previous one is tried. A checkpoint that is intact
  but does not fit the current model/optimizer raises `CheckpointMismatchError` instead (and is
  left alone): that is a configuration mistake, not corruption.
- Restores take the abstract state with the *current* shardings, so a checkpoint written on one
  mesh restores onto another (different device count or FSDP layout).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from afc_jax.checkpoints import training_state
from afc_jax.checkpoints.training_state import (  # saves record them, restores verify them
    CheckpointCorruptError,
    checksums,
    verify,
)
from afc_jax.train import faults
from afc_jax.train import workdir as workdirs

_META_KEY = training_state.CHECKSUMS_KEY
_path_name = training_state.leaf_path_name


class CheckpointMismatchError(ValueError):
    """A readable checkpoint that does not fit the current model/optimizer state."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; older checkpoints are untouched."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdirs.resolve(workdir), "checkpoints")


def corrupt_dir(workdir: str) -> str:
    return os.path.join(workdirs.resolve(workdir), "checkpoints_corrupt")


# ----------------------------------------------------------------------------- helpers


def _describe(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def _all_processes_agree(ok: bool) -> bool:
    """True only if `ok` on every process (one collective in multi-process runs)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(int(ok), np.int32))
    return bool(np.all(flags))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _check_fits(metadata, abstract_state, what: str) -> None:
    """CheckpointMismatchError when the saved tree's paths/shapes differ from the state's."""
    saved = {
        _path_name(p): tuple(getattr(m, "shape", ()) or ())
        for p, m in jax.tree_util.tree_flatten_with_path(metadata)[0]
    }
    wanted = {
        _path_name(p): tuple(a.shape)
        for p, a in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    }
    if not saved:
        raise CheckpointCorruptError(f"{what}: no array metadata")
    if saved == wanted:
        return
    only_saved = sorted(set(saved) - set(wanted))
    only_wanted = sorted(set(wanted) - set(saved))
    shapes = sorted(k for k in set(saved) & set(wanted) if saved[k] != wanted[k])
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape(s) differ, e.g. {k}: saved {saved[k]}, now {wanted[k]}")
    if only_saved:
        parts.append(f"{len(only_saved)} saved array(s) unknown now, e.g. {only_saved[:3]}")
    if only_wanted:
        parts.append(
            f"{len(only_wanted)} array(s) absent from the checkpoint, e.g. {only_wanted[:3]}"
        )
    raise CheckpointMismatchError(
        f"{what} was written for a different model or optimizer ({'; '.join(parts)}). Use a new "
        "workdir for a new configuration, or the configuration the checkpoint was trained with "
        "(its config.json)."
    )


# ----------------------------------------------------------------------------- manager


class TrainCheckpoints:
    """Saves, prunes and restores the train state of one workdir (all processes call it)."""

    def __init__(
        self, workdir: str, *, keep: int, async_save: bool, log: Callable[[str], None] = print
    ):
        if keep < 1:
            raise ValueError(f"checkpoint_keep must be >= 1, got {keep}")
        self.workdir = workdirs.resolve(workdir)
        self.directory = checkpoint_dir(workdir)
        self.keep = int(keep)
        self.async_save = bool(async_save)
        self.log = log
        self._pending: int | None = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # pruned here, only after a newer checkpoint is committed
            enable_async_checkpointing=self.async_save,
            create=True,
            cleanup_tmp_directories=True,  # leftovers of saves killed mid-write
            temporary_path_class=faults.temporary_path_class(),
        )
        self.manager = ocp.CheckpointManager(
            self.directory, item_handlers=ocp.StandardCheckpointHandler(), options=options
        )

    # -- saving
    def committed_steps(self) -> list[int]:
        """Steps whose checkpoint is complete on disk (waits for a save in flight)."""
        self.wait()
        return sorted(self.manager.all_steps())

    def wait(self) -> None:
        """Waits for a save in flight; raises CheckpointSaveError if it failed; then prunes."""
        pending, self._pending = self._pending, None
        error = None
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as exc:  # noqa: BLE001  (re-raised below with context)
            error = exc
        if pending is not None or error is not None:
            self.manager.reload()
            if error is not None or pending not in self.manager.all_steps():
                raise self._save_error(pending, error)
        self._prune()

    def _save_error(self, step, error) -> CheckpointSaveError:
        good = sorted(self.manager.all_steps())
        kept = f"checkpoint {good[-1]} is the newest good one" if good else "no checkpoint yet"
        why = _describe(error) if error is not None else "it is not on disk after the save"
        return CheckpointSaveError(
            f"checkpoint {step} could not be written to {self.directory} ({why}); {kept} and was "
            "kept. Fix the cause (e.g. free disk space) and run the same command again."
        )

    def _prune(self) -> None:
        steps = sorted(self.manager.all_steps())
        for step in steps[: max(0, len(steps) - self.keep)]:
            self.manager.delete(step)

    def save(self, step: int, state) -> bool:
        """Writes checkpoint `step` (asynchronously if configured); False if it already exists."""
        self.wait()
        step = int(step)
        if step in self.manager.all_steps():
            return False
        sums = checksums(state)  # before the caller can donate the state's buffers
        try:
            self.manager.save(
                step,
                args=ocp.args.StandardSave(state),
                custom_metadata={_META_KEY: sums},
                force=True,
            )
        except Exception as exc:
            self.manager.reload()
            raise self._save_error(step, exc) from exc
        self._pending = step
        if not self.async_save:
            self.wait()
        return True

    # -- restoring
    def restore_latest(self, abstract_state):
        """(state, step) from the newest good checkpoint, or (None, None) when there is none.

        Unreadable or corrupt checkpoints are reported and moved aside, newest first, until one
        restores and verifies. Raises CheckpointMismatchError for a checkpoint of another model,
        CheckpointCorruptError when every checkpoint was corrupt.
        """
        self.manager.reload()
        steps = sorted(self.manager.all_steps(), reverse=True)
        moved = []
        for step in steps:
            what = f"checkpoint {step} in {self.directory}"
            state, problem = None, None
            try:
                _check_fits(self.manager.item_metadata(step), abstract_state, what)
                state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
                custom = self.manager.metadata(step).custom_metadata or {}
                if not verify(state, custom.get(_META_KEY), what):
                    self.log(f"note: {what} has no checksums (older format); not verified")
            except CheckpointMismatchError:
                raise
            except Exception as exc:  # noqa: BLE001  (any failure to read means corrupt)
                problem = exc
            if _all_processes_agree(problem is None):
                if moved:
                    self.log(f"resuming from {what}, the newest good checkpoint")
                return state, step
            reason = _describe(problem) if problem is not None else "unreadable on another process"
            destination = self._quarantine(step)
            moved.append(destination)
            self.log(
                f"warning: {what} is corrupt or incomplete ({reason}); moved it to {destination} "
                "and trying the previous checkpoint"
            )
        if moved:
            raise CheckpointCorruptError(
                f"every checkpoint in {self.directory} was corrupt; they were moved to "
                f"{corrupt_dir(self.workdir)}. Run again to start from scratch."
            )
        return None, None

    def _quarantine(self, step: int) -> str:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        destination = os.path.join(corrupt_dir(self.workdir), f"{step}-{stamp}")
        if jax.process_index() == 0:
            epath.Path(corrupt_dir(self.workdir)).mkdir(parents=True, exist_ok=True)
            epath.Path(self.directory, str(step)).rename(destination)
        _barrier(f"afc_jax_quarantine_{step}")
        self.manager.reload()
        return destination

    def close(self, *, abandon: bool = False) -> None:
        """Waits for (and prunes after) a save in flight; `abandon` skips every collective
        (used when another process died and barriers would only wait for it)."""
        if abandon:
            return
        try:
            self.wait()
        finally:
            self.manager.close()


# ----------------------------------------------------------------------------- offline access


def abstract_with_shardings(abstract_state, shardings):
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )


def _read_only_manager(workdir: str) -> ocp.CheckpointManager:
    return training_state.read_only_manager(checkpoint_dir(workdir))


def checkpoint_steps(workdir: str) -> list[int]:
    """Steps of the committed checkpoints in `workdir` (oldest first)."""
    return training_state.training_steps(checkpoint_dir(workdir))


def load_raw_state(workdir: str, step: int | None = None, *, verify_checksums: bool = True):
    """The saved train state as host arrays (no model or mesh needed), and its step.

    Verifies the checksums recorded at save time (CheckpointCorruptError on a mismatch).
    """
    return training_state.read_training_state(
        checkpoint_dir(workdir), step, verify_checksums=verify_checksums
    )
