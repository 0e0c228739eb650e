"""Training entry point (thin wiring; the training loop lands with the training issue).

Until then this script says so and exits with status 2 instead of pretending to train.
"""

import sys

MESSAGE = """\
afc-jax: training is not implemented yet.

The model zoo, parity with the official PyTorch models and checkpoint import are available:
  - build a model:        from afc_jax import models; models.create("convnext_afc_tiny")
  - import official .pth: python -m afc_jax.checkpoints.convert_torch --help
  - see AFC's invariance: python examples/shift_photo.py
The TFDS pipeline, optax recipe, mesh sharding and orbax training checkpoints are tracked in
the "Training at pod scale" issue.
"""


def main() -> int:
    sys.stderr.write(MESSAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
