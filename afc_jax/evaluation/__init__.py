"""Shift-robustness evaluation: the paper's certified protocols, feature equivariance, reports.

    from afc_jax import evaluation
    report = evaluation.run_shift_robustness(config, ["runs/afc", "runs/baseline"], "out")

Protocols (`settings.PROTOCOL_NAMES`, configured by `settings.eval_config()`):
accuracy, integer_grid, half_pixel_grid, fractional_grid, random_shift, crop_shift,
feature_equivariance. Any `apply_fn(images) -> logits` works as well as a Flax model:

    out = evaluation.evaluate(apply_fn, batches, evaluation.build_protocols(eval_cfg, 32))
"""

from afc_jax.evaluation.builders import PROTOCOL_BUILDERS, build_protocols
from afc_jax.evaluation.certified import CertifiedShift
from afc_jax.evaluation.equivariance import FeatureEquivariance
from afc_jax.evaluation.loading import (
    CheckpointSpecError,
    LoadedCheckpoint,
    ModelMismatchError,
    load_checkpoint,
    parse_spec,
    resolve,
)
from afc_jax.evaluation.protocols import (
    Accuracy,
    Batch,
    Classifier,
    Engine,
    Protocol,
    RandomShift,
    as_classifier,
    circular_shift,
    crop_offsets,
    fractional_grid_shifts,
    half_pixel_grid_shifts,
    integer_grid_shifts,
    model_classifier,
)
from afc_jax.evaluation.reporting import JSON_FILE, MARKDOWN_FILE
from afc_jax.evaluation.runner import evaluate, run_shift_robustness
from afc_jax.evaluation.settings import (
    PROTOCOL_NAMES,
    EvalConfigError,
    eval_config,
    with_eval_config,
)

__all__ = [
    "JSON_FILE",
    "MARKDOWN_FILE",
    "PROTOCOL_BUILDERS",
    "PROTOCOL_NAMES",
    "Accuracy",
    "Batch",
    "CertifiedShift",
    "CheckpointSpecError",
    "Classifier",
    "Engine",
    "EvalConfigError",
    "FeatureEquivariance",
    "LoadedCheckpoint",
    "ModelMismatchError",
    "Protocol",
    "RandomShift",
    "as_classifier",
    "build_protocols",
    "circular_shift",
    "crop_offsets",
    "eval_config",
    "evaluate",
    "fractional_grid_shifts",
    "half_pixel_grid_shifts",
    "integer_grid_shifts",
    "load_checkpoint",
    "model_classifier",
    "parse_spec",
    "resolve",
    "run_shift_robustness",
    "with_eval_config",
]
