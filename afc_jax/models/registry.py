"""Model registry: `create("convnext_afc_tiny")`, or a family with `depths=` and `dims=`."""

from __future__ import annotations

from afc_jax.models.convnext import ConvNeXt
from afc_jax.models.families import FAMILIES, SIZES


def available_models() -> list[str]:
    """Every registered name: each family (the four main ones and the ablation rungs), bare
    and with each size suffix."""
    names = list(FAMILIES)
    names += [f"{family}_{size}" for family in FAMILIES for size in SIZES]
    return sorted(names)


def parse_name(name: str) -> tuple[str, str | None]:
    """Splits a registry name into (family, size or None); raises on unknown names."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name in FAMILIES:
        return name, None
    family, _, size = name.rpartition("_")
    if family in FAMILIES and size in SIZES:
        return family, size
    raise ValueError(
        f"unknown model {name!r}. Families: {', '.join(FAMILIES)} (pass depths= and dims=), "
        f"or a family with a size suffix _{', _'.join(SIZES)}, e.g. 'convnext_afc_tiny'."
    )


def create(name: str, **kwargs) -> ConvNeXt:
    """Builds a model by name. Keyword arguments go to `ConvNeXt` (num_classes, dtype, ...).

    A sized name fixes depths and dims; a bare family name requires both.
    """
    family, size = parse_name(name)
    if size is not None:
        if "depths" in kwargs or "dims" in kwargs:
            raise ValueError(
                f"{name!r} fixes depths and dims; to choose them, create the bare family "
                f"{family!r} with depths= and dims="
            )
        kwargs["depths"], kwargs["dims"] = SIZES[size]
    elif "depths" not in kwargs or "dims" not in kwargs:
        raise ValueError(
            f"family {name!r} needs depths= and dims= (4 each), or use a sized name such as "
            f"'{name}_tiny'"
        )
    kwargs["depths"] = tuple(int(d) for d in kwargs["depths"])
    kwargs["dims"] = tuple(int(d) for d in kwargs["dims"])
    return ConvNeXt(family=FAMILIES[family], **kwargs)
