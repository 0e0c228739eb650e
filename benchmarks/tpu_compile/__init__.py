"""Ahead-of-time TPU compilation of the train and eval steps (`python -m benchmarks.tpu_compile`).

See `benchmarks/README.md` ("TPU compilation") and `benchmarks.tpu_compile.core`. This module
imports no jax, so that `__main__` can choose the platform before jax reads its settings.
"""

from benchmarks.tpu_compile.chips import CHIPS, ChipSpec, chip_spec

__all__ = ["CHIPS", "ChipSpec", "chip_spec"]
