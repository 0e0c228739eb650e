"""Checkpoints: official PyTorch import (no torch needed) and orbax variables checkpoints.

state_dict = checkpoints.read_torch_checkpoint("convnext_afc_tiny.pth")
variables = checkpoints.from_torch_state_dict(state_dict, model)
checkpoints.save_variables("ckpt/afc_tiny", variables, model_name="convnext_afc_tiny")
state, step = checkpoints.read_training_state("runs/afc/checkpoints")  # a training run's state
"""

from afc_jax.checkpoints.orbax_io import (
    CheckpointNotFoundError,
    load_model,
    load_variables,
    read_metadata,
    save_variables,
)
from afc_jax.checkpoints.torch_import import (
    StateDictMismatchError,
    from_torch_state_dict,
    to_torch_state_dict,
    torch_buffers,
    torch_key_mapping,
)
from afc_jax.checkpoints.torch_reader import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_torch_file,
    read_torch_checkpoint,
)
from afc_jax.checkpoints.training_state import (
    CheckpointCorruptError,
    NoTrainingCheckpointError,
    read_training_state,
    training_steps,
)

__all__ = [
    "CheckpointCorruptError",
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "NoTrainingCheckpointError",
    "StateDictMismatchError",
    "UnsafeCheckpointError",
    "from_torch_state_dict",
    "load_model",
    "load_torch_file",
    "load_variables",
    "read_metadata",
    "read_training_state",
    "read_torch_checkpoint",
    "save_variables",
    "to_torch_state_dict",
    "torch_buffers",
    "torch_key_mapping",
    "training_steps",
]
