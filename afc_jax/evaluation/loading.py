"""Checkpoints to evaluate: orbax training runs, afc-jax variables checkpoints, official .pth.

A checkpoint spec is a path, optionally labelled `label=path`:

- a training workdir (holds `checkpoints/<step>/`): its newest step; `<workdir>/checkpoints`
  and `<workdir>/checkpoints/<step>` pick the newest or that step. The EMA or the raw weights
  (`weights`), and the model recorded in `<workdir>/config.json` (so runs of different
  families evaluate side by side under one `--config`), else the config's model;
- an afc-jax variables checkpoint (`python -m afc_jax.checkpoints.convert_torch`): the model
  recorded in it;
- an official PyTorch `.pth` (raw state dict or training checkpoint with `model` /
  `model_ema`): the config's model (`--config.model.name` says the family and size).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from afc_jax import models
from afc_jax.evaluation.protocols import Classifier, as_classifier
from afc_jax.models.config import afc_formulation

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar")
MODEL_FIELDS = (
    "name",
    "depths",
    "dims",
    "drop_path_rate",
    "layer_scale_init",
    "head_init_scale",
    "dtype",
    "filter_rule",
)
# How the model computes, not what: taken from the evaluating config, never from a saved run
# (a run trained with GPU-friendly filters can be evaluated with CPU-friendly ones).
# afc_formulation is read through `afc_jax.models.config.afc_formulation` (which also accepts
# its old name, mlp_impl).
IMPL_FIELDS = ("afc_formulation", "filter_impl")


class CheckpointSpecError(ValueError):
    """The path is none of the checkpoint kinds eval.py reads, or lacks the weights asked for."""


class ModelMismatchError(ValueError):
    """A checkpoint's weights do not fit the model it is evaluated with."""


@dataclasses.dataclass
class LoadedCheckpoint:
    """A model and its variables, with where they came from (for the reports)."""

    name: str
    path: str
    source: str  # "training" | "variables" | "torch" | "in-memory"
    model_name: str
    model: nn.Module | None
    variables: Any
    weights: str | None = None
    step: int | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    classifier_override: Classifier | None = None

    def classifier(self) -> Classifier:
        if self.classifier_override is not None:
            return self.classifier_override
        return as_classifier(self.model, self.variables, name=self.name)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "source": self.source,
            "model": self.model_name,
            "weights": self.weights,
            "step": self.step,
            "notes": list(self.notes),
        }


def parse_spec(spec: str) -> tuple[str | None, str]:
    """`label=path` -> (label, path); a plain path -> (None, path)."""
    spec = os.fspath(spec)
    label, sep, path = spec.partition("=")
    if sep and label and "/" not in label and os.sep not in label and path:
        return label, path
    return None, spec


def detect(path: str | os.PathLike) -> tuple[str, dict]:
    """(kind, details) for a checkpoint path; raises CheckpointSpecError when unknown."""
    from afc_jax.checkpoints.orbax_io import METADATA_FILE

    p = epath.Path(path)  # local, or gs:// (a run trained on a pod)
    if not p.exists():
        raise CheckpointSpecError(f"checkpoint {path} does not exist")
    if p.is_file():
        if p.suffix in TORCH_SUFFIXES:
            return "torch", {}
        raise CheckpointSpecError(
            f"{path} is a file but not a PyTorch checkpoint ({', '.join(TORCH_SUFFIXES)})"
        )
    if (p / METADATA_FILE).is_file():
        return "variables", {}
    if (p / "checkpoints").is_dir():
        return "training", {"workdir": p, "step": None}
    if p.name == "checkpoints":
        return "training", {"workdir": p.parent, "step": None}
    if p.name.isdigit() and p.parent.name == "checkpoints":
        return "training", {"workdir": p.parent.parent, "step": int(p.name)}
    raise CheckpointSpecError(
        f"{path} is not a checkpoint eval.py can read. Expected a training workdir (with "
        "checkpoints/<step>/), <workdir>/checkpoints[/<step>], an afc-jax variables "
        f"checkpoint (with {METADATA_FILE}) or an official .pth file."
    )


def _saved_model_config(workdir: epath.Path) -> dict | None:
    path = workdir / "config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    model = saved.get("model")
    return model if isinstance(model, dict) else None


def model_config(config: ml_collections.ConfigDict, saved: dict | None = None):
    """A config holding only `model`: the given config's, updated with a saved run's."""
    fields = {k: config.model.get(k) for k in MODEL_FIELDS}
    for k in MODEL_FIELDS:
        if saved and saved.get(k) is not None:
            fields[k] = saved[k]
    for k in ("depths", "dims"):
        if fields.get(k) is not None:
            fields[k] = tuple(int(v) for v in fields[k])
    fields["afc_formulation"] = afc_formulation(config.model)
    fields["filter_impl"] = config.model.get("filter_impl") or "auto"
    return ml_collections.ConfigDict({"model": fields})


def check_params(model: nn.Module, params, where: str, image_size: int = 32) -> None:
    """Raises ModelMismatchError naming every missing, unexpected or mis-shaped parameter."""
    x = jnp.zeros((1, image_size, image_size, model.in_chans), jnp.float32)
    want = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]

    def flat(tree):
        return {
            jax.tree_util.keystr(path): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        }

    got_f, want_f = flat(params), flat(want)
    problems = [f"missing {k}" for k in sorted(set(want_f) - set(got_f))]
    problems += [f"unexpected {k}" for k in sorted(set(got_f) - set(want_f))]
    problems += [
        f"{k}: checkpoint {got_f[k]}, model {want_f[k]}"
        for k in sorted(set(got_f) & set(want_f))
        if got_f[k] != want_f[k]
    ]
    if problems:
        raise ModelMismatchError(
            f"{where} does not fit the model: "
            + "; ".join(problems[:10])
            + (f" ... ({len(problems) - 10} more)" if len(problems) > 10 else "")
        )


def _host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def load_checkpoint(
    spec,
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    weights: str = "ema",
) -> LoadedCheckpoint:
    """Loads one checkpoint spec (see the module docstring)."""
    label, path = parse_spec(spec)
    kind, details = detect(path)
    loaders = {"training": _load_training, "variables": _load_variables, "torch": _load_torch}
    return loaders[kind](label, path, details, config, num_classes, weights)


def _load_training(label, path, details, config, num_classes, weights) -> LoadedCheckpoint:
    """The EMA or raw weights of a training run's step, with the model its config.json names."""
    from afc_jax.checkpoints import read_training_state

    notes: list[str] = []
    workdir = epath.Path(details["workdir"])
    saved = _saved_model_config(workdir)
    if saved is None:
        notes.append(f"no {workdir}/config.json: model from the given config")
    model = models.from_config(model_config(config, saved).model, num_classes)
    state, step = read_training_state(workdir / "checkpoints", details["step"])
    key = "ema_params" if weights == "ema" else "params"
    if key not in state:
        raise CheckpointSpecError(
            f"{path}: the training state has no {key!r} (keys: {sorted(state)}); evaluate the "
            "other weights (--weights=ema|raw)"
        )
    params = _host(state[key])
    check_params(model, params, f"{path} ({key})")
    name = label or workdir.name + (f"@{step}" if details["step"] is not None else "")
    return LoadedCheckpoint(
        name=name,
        path=str(path),
        source="training",
        model_name=str(model_config(config, saved).model.name),
        model=model,
        variables={"params": params},
        weights=weights,
        step=int(step),
        notes=notes,
    )


def _load_variables(label, path, details, config, num_classes, weights) -> LoadedCheckpoint:
    """An afc-jax variables checkpoint, with the model recorded in it."""
    del details, config, weights  # the checkpoint records its model and weights
    from afc_jax.checkpoints import load_model

    model, variables, meta = load_model(path)
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise ModelMismatchError(
            f"{path} has {model.num_classes} classes but the dataset has {num_classes}"
        )
    return LoadedCheckpoint(
        name=label or epath.Path(path).name,
        path=str(path),
        source="variables",
        model_name=str(meta.get("model_name")),
        model=model,
        variables=_host(variables),
        weights=(meta.get("extra") or {}).get("which"),
        notes=[],
    )


def _load_torch(label, path, details, config, num_classes, weights) -> LoadedCheckpoint:
    """An official .pth: `model_ema` or `model` as asked, else the file's only weights."""
    del details
    from afc_jax.checkpoints import (
        CheckpointFormatError,
        from_torch_state_dict,
        read_torch_checkpoint,
    )

    notes: list[str] = []
    model = models.from_config(model_config(config).model, num_classes)
    which = "model_ema" if weights == "ema" else "model"
    try:
        state_dict = read_torch_checkpoint(path, which=which)
        used = which
    except CheckpointFormatError:
        state_dict = read_torch_checkpoint(path, which="auto")
        used = "auto"
        notes.append(f"no {which!r} entry in the file: evaluated its only/default weights")
    variables = from_torch_state_dict(state_dict, model)
    return LoadedCheckpoint(
        name=label or epath.Path(path).stem,
        path=str(path),
        source="torch",
        model_name=str(config.model.name),
        model=model,
        variables=_host(variables),
        weights={"model_ema": "ema", "model": "raw"}.get(used, "state_dict"),
        notes=notes,
    )


def resolve(checkpoints, config, num_classes: int, *, weights: str = "ema"):
    """Loads every entry: a spec string/path, a `LoadedCheckpoint`, a `Classifier`, or a
    `(name, model_or_apply_fn, variables)` tuple. Names are made unique."""
    out: list[LoadedCheckpoint] = []
    for i, item in enumerate(checkpoints):
        if isinstance(item, LoadedCheckpoint):
            ck = item
        elif isinstance(item, Classifier):
            ck = LoadedCheckpoint(
                name=item.name,
                path="",
                source="in-memory",
                model_name=item.name,
                model=None,
                variables=None,
                classifier_override=item,
            )
        elif isinstance(item, tuple):
            name, obj, variables = item
            clf = as_classifier(obj, variables, name=name)
            model_name = getattr(getattr(obj, "family", None), "name", None) or name
            ck = LoadedCheckpoint(
                name=name,
                path="",
                source="in-memory",
                model_name=model_name,
                model=None,
                variables=None,
                classifier_override=clf,
            )
        elif isinstance(item, (str, os.PathLike)):
            ck = load_checkpoint(item, config, num_classes, weights=weights)
        else:
            raise TypeError(f"checkpoint #{i}: cannot evaluate a {type(item).__name__}")
        out.append(ck)
    seen: dict[str, int] = {}
    for ck in out:
        if ck.name in seen:
            seen[ck.name] += 1
            ck.name = f"{ck.name}#{seen[ck.name]}"
        else:
            seen[ck.name] = 1
    return out
