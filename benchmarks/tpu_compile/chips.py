"""Public per-chip figures of Cloud TPU generations, for roofline estimates and "fits".

Each figure is what Google's Cloud TPU documentation states for one chip (the page is cited
per entry). HBM capacities the pages give in "GB" are taken as 10^9 bytes, which is the
conservative reading if GiB was meant; v4's page says GiB.
"""

from __future__ import annotations

import dataclasses

GB = 10**9
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    kind: str
    peak_flops_per_s: float  # bf16 dense matmul peak per chip
    hbm_bandwidth_bytes_per_s: float
    hbm_capacity_bytes: int
    source: str


CHIPS = {
    # https://cloud.google.com/tpu/docs/v5e: "Peak compute per chip (bf16) 197 TFLOPs",
    # "HBM2 capacity and bandwidth 16 GB, 819 GBps".
    "v5e": ChipSpec("v5e", 197e12, 819 * GB, 16 * GB, "https://cloud.google.com/tpu/docs/v5e"),
    # https://cloud.google.com/tpu/docs/v5p-training (TPU v5p): "Peak compute per chip (bf16)
    # 459 TFLOPs", "HBM2e capacity and bandwidth 95GB, 2765 GBps".
    "v5p": ChipSpec(
        "v5p", 459e12, 2765 * GB, 95 * GB, "https://cloud.google.com/tpu/docs/v5p-training"
    ),
    # https://docs.cloud.google.com/tpu/docs/v6e (Trillium): "Peak compute per chip (bf16)
    # 918 TFLOPs", "HBM capacity per chip 32 GB", "HBM bandwidth per chip 1638 GBps".
    "v6e": ChipSpec(
        "v6e", 918e12, 1638 * GB, 32 * GB, "https://docs.cloud.google.com/tpu/docs/v6e"
    ),
    # https://cloud.google.com/tpu/docs/v4: "Peak compute per chip 275 teraflops (bf16 or
    # int8)", "HBM2 capacity and bandwidth 32 GiB, 1200 GBps". A v4 chip has two TensorCores
    # that JAX shows as one (megacore) device.
    "v4": ChipSpec("v4", 275e12, 1200 * GB, 32 * GIB, "https://cloud.google.com/tpu/docs/v4"),
}

# Names libtpu accepts for the same chips (topology names like "v5litepod:16x16").
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "v6lite": "v6e", "v5": "v5p"}


def chip_spec(topology: str) -> ChipSpec:
    """The ChipSpec of a topology name "KIND:AxB[xC]" (e.g. "v5e:16x16", "v5p:4x4x8")."""
    kind = topology.partition(":")[0].strip().lower()
    kind = ALIASES.get(kind, kind)
    if kind not in CHIPS:
        raise ValueError(
            f"unknown TPU kind {topology.partition(':')[0]!r} in topology {topology!r}; known: "
            f"{sorted(CHIPS)} (e.g. v5e:2x2, v5e:16x16, v5p:4x4x8, v6e:16x16, v4:2x2x2)"
        )
    return CHIPS[kind]
