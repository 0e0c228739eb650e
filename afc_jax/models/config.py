"""A model from the `model` section of a config (train.py, eval.py, the analysis CLI).

    model = models.from_config(config.model, num_classes=10)

Fields: `name` (a registry name, e.g. "convnext_afc_tiny"), `dtype` ("float32" | "bfloat16"),
`drop_path_rate`, `layer_scale_init`, `head_init_scale`, `filter_rule`, optionally `depths` and
`dims` (override the size), and how the model computes: `mlp_impl`, `filter_impl`, `remat`
("auto"/"none" when absent).
"""

from __future__ import annotations

import jax.numpy as jnp

from afc_jax.layers.mlp import FILTER_IMPLS, MLP_IMPLS
from afc_jax.models.convnext import REMAT_OPTIONS
from afc_jax.models.registry import create

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ModelConfigError(ValueError):
    """The `model` section of a config names no model that can be built."""


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
        mlp_impl=m.get("mlp_impl") or "auto",
        filter_impl=m.get("filter_impl") or "auto",
        remat=m.get("remat") or "none",
    )
    choices = (("mlp_impl", MLP_IMPLS), ("filter_impl", FILTER_IMPLS), ("remat", REMAT_OPTIONS))
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
