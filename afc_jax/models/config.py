"""A model from the `model` section of a config (train.py, eval.py, the analysis CLI).

    model = models.from_config(config.model, num_classes=10)

Fields: `name` (a registry name, e.g. "convnext_afc_tiny"), `dtype` ("float32" | "bfloat16"),
`drop_path_rate`, `layer_scale_init`, `head_init_scale`, `filter_rule`, optionally `depths` and
`dims` (override the size), and how the model computes: `afc_formulation` (its old name
`mlp_impl` is still read, see `afc_formulation`), `filter_impl`, `remat` and `fine_grid_remat`
(when absent: "auto", "none" and "auto").
"""

from __future__ import annotations

import logging

import jax.numpy as jnp

from afc_jax.layers.mlp import AFC_FORMULATIONS, FINE_GRID_REMAT
from afc_jax.models.convnext import REMAT_OPTIONS
from afc_jax.models.registry import create
from afc_jax.ops.filter_choice import FILTER_IMPLS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


_log = logging.getLogger(__name__)


class ModelConfigError(ValueError):
    """The `model` section of a config names no model that can be built."""


def afc_formulation(model_config) -> str:
    """`model.afc_formulation`, or the deprecated `model.mlp_impl` (same values, logged
    warning) for configs and saved runs written before the rename; "auto" when neither is set.

    Raises ModelConfigError (a ValueError) when both are set and differ.
    """
    new, old = model_config.get("afc_formulation"), model_config.get("mlp_impl")
    if old:
        _log.warning(
            "model.mlp_impl is deprecated: it is model.afc_formulation (same values; it also "
            "selects how the AFC stem is computed). Read mlp_impl=%r as afc_formulation.", old
        )
        if old not in AFC_FORMULATIONS:
            raise ModelConfigError(
                f"model.mlp_impl (the deprecated name of model.afc_formulation) must be one of "
                f"{AFC_FORMULATIONS}, got {old!r}"
            )
        if new and new != old:
            raise ModelConfigError(
                f"model.afc_formulation={new!r} and its deprecated name model.mlp_impl={old!r} "
                "disagree; set only model.afc_formulation"
            )
    return new or old or "auto"


def from_config(model_config, num_classes: int):
    """The `ConvNeXt` a config's `model` section describes; ModelConfigError saying which
    field to change otherwise."""
    m = model_config
    if m.dtype not in DTYPES:
        raise ModelConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
    kwargs = dict(
        num_classes=num_classes,
        drop_path_rate=m.drop_path_rate,
        layer_scale_init=m.layer_scale_init,
        head_init_scale=m.head_init_scale,
        dtype=DTYPES[m.dtype],
        filter_rule=m.filter_rule,
        afc_formulation=afc_formulation(m),
        filter_impl=m.get("filter_impl") or "auto",
        remat=m.get("remat") or "none",
        fine_grid_remat=m.get("fine_grid_remat") or "auto",
    )
    choices = (
        ("afc_formulation", AFC_FORMULATIONS),
        ("filter_impl", FILTER_IMPLS),
        ("remat", REMAT_OPTIONS),
        ("fine_grid_remat", FINE_GRID_REMAT),
    )
    for field, allowed in choices:
        if kwargs[field] not in allowed:
            raise ModelConfigError(
                f"model.{field} must be one of {allowed}, got {kwargs[field]!r}"
            )
    if m.get("depths") is not None or m.get("dims") is not None:
        kwargs["depths"], kwargs["dims"] = tuple(m.depths), tuple(m.dims)
    try:
        return create(m.name, **kwargs)
    except ValueError as exc:
        raise ModelConfigError(f"model: {exc}") from exc
