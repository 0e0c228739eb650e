"""The evaluators an `eval` config section asks for.

`build_protocols(eval_cfg, image_size)` returns fresh instances (they accumulate) of the
protocols named in `eval_cfg.protocols`, each made by its entry of `PROTOCOL_BUILDERS`
(`builder(eval_cfg, image_size) -> Protocol`) from the settings documented in
`settings.eval_config`, after `settings.validate`.
"""

from __future__ import annotations

from collections.abc import Callable

from afc_jax.evaluation import settings
from afc_jax.evaluation.certified import CertifiedShift
from afc_jax.evaluation.equivariance import FeatureEquivariance
from afc_jax.evaluation.protocols import (
    Accuracy,
    Protocol,
    RandomShift,
    crop_offsets,
    fractional_grid_shifts,
    half_pixel_grid_shifts,
    integer_grid_shifts,
)


def _certified_kwargs(ev) -> dict:
    return dict(
        chunk_size=int(ev.chunk_size),
        compact_factor=int(ev.compact_factor),
        max_compactions=int(ev.max_compactions),
        heatmap_examples=int(ev.heatmap_examples),
    )


def _sets(ev) -> str:
    return str(ev.get("shift_sets", "official"))


def _integer_grid(ev, image_size):
    m, sets = int(ev.max_shift), _sets(ev)
    shifts = integer_grid_shifts(m, sets)
    what = "(0, 0) and every (dy, dx), 1" if sets == "official" else "every (dy, dx), 0"
    return CertifiedShift(
        "integer_grid",
        shifts,
        grid_shape=(m, m),
        grid_cells=shifts.astype(int),  # the official set leaves (0, k) and (k, 0) out
        axes={"dy": list(range(m)), "dx": list(range(m))},
        description=f"integer circular shifts {what} <= dy, dx < {m} ({sets} set)",
        **_certified_kwargs(ev),
    )


def _half_pixel_grid(ev, image_size):
    m, sets = int(ev.max_shift), _sets(ev)  # settings.validate: m >= 2
    sign = "-" if sets == "official" else ""
    values = [float(v) for v in half_pixel_grid_shifts(m, sets)[: m - 1, 1]]
    return CertifiedShift(
        "half_pixel_grid",
        half_pixel_grid_shifts(m, sets),
        grid_shape=(m - 1, m - 1),
        axes={"dy": values, "dx": values},
        description=f"every circular shift ({sign}(dy - 1/2), {sign}(dx - 1/2)), "
        f"1 <= dy, dx < {m} ({sets} set)",
        **_certified_kwargs(ev),
    )


def _fractional_grid(ev, image_size):
    dens, sets = tuple(int(u) for u in ev.fractional_denominators), _sets(ev)
    sign = "-" if sets == "official" else ""
    return CertifiedShift(
        "fractional_grid",
        fractional_grid_shifts(dens, sets),
        description=f"every circular shift ({sign}a/u, {sign}b/u), 1 <= a, b < u, u in "
        + ", ".join(map(str, dens))
        + f" ({sets} set)",
        **_certified_kwargs(ev),
    )


def _crop_shift(ev, image_size):
    m, sets = settings.crop_margin(ev, image_size), _sets(ev)
    lo = 1 if sets == "official" else 0
    offsets = list(range(lo, 2 * m + 1))
    return CertifiedShift(
        "crop_shift",
        crop_offsets(m, sets),
        kind="crop",
        require_unshifted=False,
        grid_shape=(len(offsets), len(offsets)),
        axes={"dy": offsets, "dx": offsets},
        crop_margin=m,
        resize_method=str(ev.crop_resize_method),
        description=f"resize to {image_size}+2*{m} ({ev.crop_resize_method}), every "
        f"{image_size}x{image_size} window at offsets {lo}..{2 * m}, no wrap-around "
        f"({sets} set)",
        **_certified_kwargs(ev),
    )


def _random_shift(ev, image_size):
    return RandomShift(
        num_shifts=int(ev.random_shifts),
        max_shift=int(ev.random_max_shift or ev.max_shift),
        seed=int(ev.seed),
    )


def _feature_equivariance(ev, image_size):
    return FeatureEquivariance(
        ev.equivariance_integer_shifts,
        ev.equivariance_fractional_shifts,
        num_examples=int(ev.equivariance_examples),
    )


PROTOCOL_BUILDERS: dict[str, Callable[..., Protocol]] = {
    "accuracy": lambda ev, size: Accuracy(),
    "integer_grid": _integer_grid,
    "half_pixel_grid": _half_pixel_grid,
    "fractional_grid": _fractional_grid,
    "random_shift": _random_shift,
    "crop_shift": _crop_shift,
    "feature_equivariance": _feature_equivariance,
}


def build_protocols(eval_cfg=None, image_size: int = 224, names=None) -> list[Protocol]:
    """The evaluators named in `eval_cfg.protocols` (or `names`), configured by `eval_cfg`."""
    ev = eval_cfg if eval_cfg is not None else settings.eval_config()
    names = settings.normalize_protocols(names if names is not None else ev.protocols)
    settings.validate(ev, image_size, names)
    return [PROTOCOL_BUILDERS[n](ev, image_size) for n in names]


__all__ = ["PROTOCOL_BUILDERS", "build_protocols"]
