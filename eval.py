"""Evaluation entry point (thin wiring; the shift-robustness protocols land with their issue).

Until then this script says so and exits with status 2 instead of pretending to evaluate.
"""

import sys

MESSAGE = """\
afc-jax: eval.py (certified shift-robustness protocols) is not implemented yet.

What works today:
  - convert an official checkpoint: python -m afc_jax.checkpoints.convert_torch --help
  - load it:  model, variables, _ = afc_jax.checkpoints.load_model("ckpt/afc_tiny")
  - compare logits under fractional shifts: python examples/shift_photo.py \\
        --config.checkpoints.afc=ckpt/afc_tiny
"""


def main() -> int:
    sys.stderr.write(MESSAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
