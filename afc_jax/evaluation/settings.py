"""The `eval` sub-config: which shift-robustness protocols run, and how.

Training configs do not carry an `eval` section; `with_eval_config(config)` adds
`eval_config()` to a loaded config (filling in any field a config file left out), so that
`--config.eval.<field>=<value>` overrides work on `eval.py` with any training config.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

PROTOCOL_NAMES = (
    "accuracy",
    "integer_grid",
    "half_pixel_grid",
    "fractional_grid",
    "random_shift",
    "crop_shift",
    "feature_equivariance",
)
WEIGHTS = ("ema", "raw")
SHIFT_SETS = ("official", "all")  # = afc_jax.evaluation.protocols.SHIFT_SETS (no jax import here)


class EvalConfigError(ValueError):
    """A setting of the `eval` section (or the eval batch) cannot work; says what to change."""


def eval_config() -> ml_collections.ConfigDict:
    """Defaults of every shift-robustness setting (the paper's protocols)."""
    c = ml_collections.ConfigDict()
    # Which protocols run, in this order (any subset of PROTOCOL_NAMES).
    c.protocols = PROTOCOL_NAMES
    # Shift sets of the certified protocols (afc_jax.evaluation.protocols.SHIFT_SETS):
    # "official" (the paper's evaluation script) or "all" (every shift of the square grids,
    # sub-pixel shifts towards higher indices). With "official":
    # integer_grid: (0, 0) and every (dy, dx) with 1 <= dy, dx < max_shift; half_pixel_grid:
    # every (-(dy - 1/2), -(dx - 1/2)) with 1 <= dy, dx < max_shift (content moves towards lower
    # indices); with "all": every 0 <= dy, dx < max_shift, and (dy - 1/2, dx - 1/2).
    c.shift_sets = "official"
    c.max_shift = 32
    # fractional_grid: every (a/u, b/u) with 1 <= a, b < u for u in these denominators
    # (negated with "official").
    c.fractional_denominators = (3, 4)
    # crop_shift: resize to image_size + 2m, classify every image_size window at offsets
    # 1..2m on both axes ("official"; "all": 0..2m), no wrap-around. -1: m = image_size // 16
    # (14 at 224, 2 at 32).
    c.crop_margin = -1
    c.crop_resize_method = "bicubic"  # jax.image.resize method
    # Shifts per forward pass: each forward classifies (examples in the batch) x chunk_size
    # shifted images. Certified protocols drop failed examples between chunks: when at most
    # 1/compact_factor of a batch is still certified it is compacted to that size and the
    # chunk grows by compact_factor (same forward size, at most max_compactions times; each
    # level is one more compiled shape).
    c.chunk_size = 8
    c.compact_factor = 4
    c.max_compactions = 2
    # Global batch of the shift evaluation (0: the config's eval_batch_size).
    c.batch_size = 0
    # Evaluate only the first max_examples examples of the split (0: all of them).
    c.max_examples = 0
    # Heat maps: the first heatmap_examples examples are classified at every shift of every
    # grid, even after they failed (the others stop at their first failure). -1: all.
    c.heatmap_examples = 512
    # random_shift: per example, this many random integer and as many fractional shifts,
    # each coordinate uniform in [0, random_max_shift) (0: max_shift); `seed` fixes them.
    c.random_shifts = 5
    c.random_max_shift = 0
    c.seed = 0
    # feature_equivariance: on the first equivariance_examples examples, per stage.
    c.equivariance_examples = 32
    c.equivariance_integer_shifts = ((0, 1), (1, 0), (1, 1), (3, 5), (8, 8), (16, 16))
    c.equivariance_fractional_shifts = (
        (0.0, 0.5),
        (0.5, 0.0),
        (0.5, 0.5),
        (1 / 3, 2 / 3),
        (0.25, 0.75),
        (2.5, 1.5),
    )
    # Training checkpoints: evaluate the EMA weights or the raw ones (eval.py --weights).
    c.weights = "ema"
    c.progress = True  # tqdm bars (process 0 only)
    c.plots = True  # PNG heat maps and equivariance plots
    return c


def with_eval_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with an `eval` section: added when absent, missing fields filled in.

    Returns a copy; the lock state of `config` is kept.
    """
    out = copy.deepcopy(config)
    defaults = eval_config()
    locked = out.is_locked
    with out.unlocked():
        if "eval" not in out or out.eval is None:
            out.eval = defaults
        else:
            for key, value in defaults.items():
                if key not in out.eval:
                    out.eval[key] = value
    if locked:
        out.lock()
    return out


def normalize_protocols(protocols) -> tuple[str, ...]:
    """Protocol names from a tuple or a comma-separated string; "all" selects every one."""
    if isinstance(protocols, str):
        protocols = [p.strip() for p in protocols.split(",") if p.strip()]
    names: list[str] = []
    for p in protocols:
        if p == "all":
            names.extend(n for n in PROTOCOL_NAMES if n not in names)
            continue
        if p not in PROTOCOL_NAMES:
            raise EvalConfigError(
                f"unknown protocol {p!r}; choose from {', '.join(PROTOCOL_NAMES)}"
            )
        if p not in names:
            names.append(p)
    if not names:
        raise EvalConfigError(
            "eval.protocols is empty; name at least one of " + ", ".join(PROTOCOL_NAMES)
        )
    return tuple(names)


def crop_margin(eval_cfg, image_size: int) -> int:
    m = int(eval_cfg.crop_margin)
    return max(1, image_size // 16) if m < 0 else m


def validate(eval_cfg, image_size: int, protocols=None) -> None:
    """Checks the settings of `protocols` (default: eval_cfg.protocols) before anything
    compiles; raises EvalConfigError saying what to change."""
    names = normalize_protocols(eval_cfg.protocols if protocols is None else protocols)
    sets = eval_cfg.get("shift_sets", "official")
    if sets not in SHIFT_SETS:
        raise EvalConfigError(f"eval.shift_sets must be one of {SHIFT_SETS}, got {sets!r}")
    if eval_cfg.max_shift < 1:
        raise EvalConfigError(f"eval.max_shift must be >= 1, got {eval_cfg.max_shift}")
    if "half_pixel_grid" in names and eval_cfg.max_shift < 2:
        raise EvalConfigError("half_pixel_grid needs eval.max_shift >= 2")
    dens: Sequence[int] = tuple(eval_cfg.fractional_denominators)
    if not dens or any(int(u) < 2 for u in dens):
        raise EvalConfigError(f"eval.fractional_denominators must be integers >= 2, got {dens}")
    if eval_cfg.chunk_size < 1:
        raise EvalConfigError(f"eval.chunk_size must be >= 1, got {eval_cfg.chunk_size}")
    if eval_cfg.compact_factor < 2 and eval_cfg.max_compactions > 0:
        raise EvalConfigError("eval.compact_factor must be >= 2 (or set eval.max_compactions=0)")
    if eval_cfg.weights not in WEIGHTS:
        raise EvalConfigError(f"eval.weights must be one of {WEIGHTS}, got {eval_cfg.weights!r}")
    if crop_margin(eval_cfg, image_size) < 0:
        raise EvalConfigError("eval.crop_margin must be >= 0 (or -1 for image_size // 16)")
    if eval_cfg.random_shifts < 1:
        raise EvalConfigError(f"eval.random_shifts must be >= 1, got {eval_cfg.random_shifts}")


class EvalConfigFileParser(flags.ArgumentParser):
    """Wraps a config-file flag's parser: the loaded config gets the `eval` section (then is
    locked as before), so `--config.eval.max_shift=8` is a valid override of any training
    config. Installed by `define_config_flag`."""

    def __init__(self, inner):
        self._inner = inner

    def parse(self, argument):
        config = self._inner.parse(argument)
        if isinstance(config, ml_collections.ConfigDict):
            config = with_eval_config(config)
        return config

    def flag_type(self):
        return self._inner.flag_type()


def define_config_flag(name: str = "config", help_string: str = "training config file"):
    """`config_flags.DEFINE_config_file(name, lock_config=True)` that adds `eval_config()`."""
    holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
    flag = flags.FLAGS[name]
    flag.parser = EvalConfigFileParser(flag.parser)
    return holder
