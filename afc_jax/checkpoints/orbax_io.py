"""Saving and loading model variables as orbax checkpoints.

A variables checkpoint is a directory holding

    variables/            the orbax PyTree checkpoint of {"params": ...}
    afc_jax_model.json    how to rebuild the model: registry name and keyword arguments

Saves go to a temporary sibling directory that is renamed into place only once complete, so an
interrupted save never leaves a half-written checkpoint under the final name, and an existing
checkpoint is never replaced unless `overwrite=True`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

METADATA_FILE = "afc_jax_model.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 1


class CheckpointNotFoundError(FileNotFoundError):
    """The directory is not an afc-jax variables checkpoint."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_variables(
    directory: str | os.PathLike,
    variables: Mapping,
    *,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes `variables` (e.g. {"params": ...}) and model metadata to `directory`.

    Args:
      directory: destination; must not exist unless `overwrite`.
      variables: a PyTree of arrays.
      model_name: registry name for `models.create` (recorded for `load_model`).
      model_kwargs: JSON-able keyword arguments for `models.create` (num_classes, ...).
      extra: any other JSON-able facts (source file, which weights, ...).
      overwrite: replace an existing checkpoint (only after the new one is complete).

    Returns:
      The absolute checkpoint path.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(
            f"{directory} already exists; refusing to overwrite it. Choose another output "
            "path or pass overwrite=True (--overwrite on the command line)."
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(staging / VARIABLES_DIR, jax.device_get(dict(variables)))
        checkpointer.wait_until_finished()
        checkpointer.close()
        meta = {
            "format": "afc_jax.variables",
            "format_version": FORMAT_VERSION,
            "model_name": model_name,
            "model_kwargs": _jsonable(dict(model_kwargs or {})),
            "extra": _jsonable(dict(extra or {})),
        }
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
            os.replace(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def read_metadata(directory: str | os.PathLike) -> dict:
    """The `afc_jax_model.json` of a variables checkpoint."""
    directory = Path(directory)
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file() or not (directory / VARIABLES_DIR).is_dir():
        raise CheckpointNotFoundError(
            f"{directory} is not an afc-jax variables checkpoint (expected {METADATA_FILE} and "
            f"{VARIABLES_DIR}/ inside). Create one with "
            "`python -m afc_jax.checkpoints.convert_torch`."
        )
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointNotFoundError(f"{meta_path} is not valid JSON: {exc}") from exc


def load_variables(directory: str | os.PathLike, model=None) -> tuple[dict, dict]:
    """Restores (variables, metadata) from `directory`.

    With `model`, the restore is checked against the model's parameter shapes and dtypes.
    """
    directory = Path(directory).absolute()
    meta = read_metadata(directory)
    checkpointer = ocp.StandardCheckpointer()
    try:
        if model is not None:
            from afc_jax.checkpoints.torch_import import abstract_params

            target = {"params": abstract_params(model)}
            variables = checkpointer.restore(directory / VARIABLES_DIR, target)
            _check_against(variables, target, directory)
        else:
            variables = checkpointer.restore(directory / VARIABLES_DIR)
    finally:
        checkpointer.close()
    return variables, meta


def _check_against(variables, target, directory) -> None:
    """Orbax may restore a saved shape over a differing target: refuse that explicitly."""
    got = {
        jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(variables)
    }
    want = {
        jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(target)
    }
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    problems += [
        f"{k}: checkpoint {tuple(got[k])}, model {tuple(want[k])}"
        for k in sorted(set(got) & set(want))
        if tuple(got[k]) != tuple(want[k])
    ]
    if problems:
        raise ValueError(
            f"checkpoint {directory} does not fit the model: "
            + "; ".join(problems[:12])
            + (f" ... ({len(problems) - 12} more)" if len(problems) > 12 else "")
        )


def load_model(directory: str | os.PathLike, **overrides):
    """Rebuilds the model recorded in a checkpoint and restores its variables.

    Returns:
      (model, variables, metadata). `overrides` go to `models.create` (e.g. dtype=...).
    """
    from afc_jax import models

    meta = read_metadata(directory)
    name = meta.get("model_name")
    if not name:
        raise ValueError(
            f"{directory} does not record a model name; pass a model to load_variables"
        )
    kwargs = dict(meta.get("model_kwargs") or {})
    kwargs.update(overrides)
    model = models.create(name, **kwargs)
    variables, meta = load_variables(directory, model)
    return model, variables, meta
