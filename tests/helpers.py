"""Shared test helpers (import as `from tests.helpers import ...`).

The official models' parity fixtures ship with the tests in `tests/fixtures/official/` (see its
README); the numerical contract they check is `../shared/spec/README.md`. Nothing here touches
the file system at import time.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "official"


def official_fixture(*parts: str) -> Path:
    """Path of a file or folder under `tests/fixtures/official/`, e.g. `("models", "x.npz")`.

    Raises FileNotFoundError (the test fails, it never skips) when it is missing: the fixtures
    are part of the repository, so a missing one is a broken checkout.
    """
    path = OFFICIAL_FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"official parity fixture {path} is missing: the fixtures are committed with the "
            "tests (tests/fixtures/official/README.md says how they are made); restore them "
            "with `git checkout -- tests/fixtures/official`"
        )
    return path


def load_official_npz(*parts: str) -> dict[str, np.ndarray]:
    """Every array of an official fixture archive, e.g. `("models", "afc_nano.npz")`."""
    with np.load(official_fixture(*parts)) as data:
        return {k: data[k] for k in data.files}


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of two samples."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def nchw_to_nhwc(x):
    """(..., C, H, W) -> (..., H, W, C)."""
    return np.moveaxis(np.asarray(x), -3, -1)


def nhwc_to_nchw(x):
    """(..., H, W, C) -> (..., C, H, W)."""
    return np.moveaxis(np.asarray(x), -1, -3)


def rel_err(a, ref) -> float:
    """max|a - ref| / max|ref|, in float64 (0 when both are all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs reference {ref.shape}")
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    diff = np.max(np.abs(a - ref)) if ref.size else 0.0
    if scale == 0.0:
        return float(diff)
    return float(diff / scale)


def random_variables(model, input_shape=(32, 32), seed: int = 0) -> dict:
    """Random but well-scaled variables for `model`, made with numpy (no XLA compilation).

    `model.init` compiles every initialiser's RNG (~10 s for a nano model on this CPU); the
    shapes alone come from `jax.eval_shape`. Values: kernels N(0, 1/fan_in), biases N(0, 0.1),
    norm scales and polynomial scales 1 + N(0, 0.1), polynomial coefficients the official init +
    N(0, 0.05), gammas (layer scale, stem gain) 0.5 + N(0, 0.1): every parameter matters.
    """
    import jax
    import jax.numpy as jnp

    from afc_jax.layers.activations import DEFAULT_POLY_COEFFS

    shape = (1,) + tuple(input_shape) + (getattr(model, "in_chans", 3),)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = getattr(path[-1], "key", str(path[-1]))
        noise = rng.standard_normal(leaf.shape)
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = noise / np.sqrt(fan_in)
        elif name == "bias":
            value = 0.1 * noise
        elif name in ("scale", "in_scale", "out_scale"):
            value = 1.0 + 0.1 * noise
        elif name == "coef":
            value = np.asarray(DEFAULT_POLY_COEFFS) + 0.05 * noise
        elif name == "gamma":
            value = 0.5 + 0.1 * noise
        else:
            raise KeyError(f"random_variables does not know parameter {name!r}")
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(make, abstract)


def signed_frequencies(n: int) -> np.ndarray:
    """The integer frequency of each DFT bin of a length-n axis: 0, 1, .., then the negatives."""
    k = np.arange(n)
    return np.where(k <= n // 2, k, k - n)


def reference_mask_1d(n: int, cutoff, rule: str) -> np.ndarray:
    """0/1 float64 mask over the full DFT of a length-n axis, from the spec's rules, exactly
    (the cutoff is taken as a fraction): "strict" keeps |k| < cutoff * n / 2; "official" keeps
    |k| <= floor(cutoff * n / 2) and drops +-floor(cutoff * n / 2) when 4 divides n."""
    cutoff = Fraction(cutoff).limit_denominator(1000)
    k = np.abs(signed_frequencies(n))
    if rule == "strict":
        return np.array([2 * kk < cutoff * n for kk in k], dtype=np.float64)
    lo = math.floor(cutoff * n / 2)
    keep = k <= lo
    if n % 4 == 0:
        keep &= k != lo
    return keep.astype(np.float64)
