"""Training: optax recipe, train state and steps, mesh sharding, orbax checkpoints, the loop."""

from afc_jax.train.loop import ConfigError, build_model, train_and_evaluate, validate
from afc_jax.train.optimizer import (
    learning_rate_schedule,
    make_optimizer,
    peak_learning_rate,
    weight_decay_mask,
)
from afc_jax.train.state import TrainState, init_state, make_eval_step, make_train_step

__all__ = [
    "ConfigError",
    "TrainState",
    "build_model",
    "init_state",
    "learning_rate_schedule",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "peak_learning_rate",
    "train_and_evaluate",
    "validate",
    "weight_decay_mask",
]
