"""What "auto" means for the ideal filters: FFT or matrices per layer, and the MLP's layout.

Every "auto" choice is made here, for the target platform (`afc_jax.ops.platform`), which is
not the host's backend when a TPU program is compiled ahead of time on a CPU host.

Implementation (`choose_filter_impl`): TPU -> "matrix" always. CPU/GPU -> "matrix" when the
dense separable form costs at most DENSE_COST_LIMIT[platform] multiply-adds per sample of the
larger grid (`dense_cost`), else "fft". For a 224 px ConvNeXt the costs are 448 (the stem's
224x224 low-pass: of the 3-channel image in the fast formulation, of the 96-channel conv output
in the reference one), 70 (its stride-4 filter), <= 42 (the stride-2 filters) and <= 93.3 (each
MLP resampling, fast or reference): all "matrix" on the CPU (limit 512, so the FFT takes the
full-size low-pass of inputs above 256 px); on a GPU (limit 256) the stem's 224x224 low-pass
goes to the FFT.

Layout of the fast MLP's hidden map (`choose_layout`): "nchw" for the FFT and on a TPU; on a
CPU/GPU with matrices "nchw" from NCHW_MIN_SIZE (20) px, "nhwc" below. Layout of matrix
downsampling (`choose_downsample_layout`): channels-first on a TPU, in place elsewhere.
Whether the fast MLP recomputes its fine-grid map in the backward pass instead of storing it
(`choose_fine_grid_remat`): on a TPU except v5p, not elsewhere.
"""

from __future__ import annotations

from afc_jax.ops.filter_matrices import fine_grid_size
from afc_jax.ops.platform import normalize_platform, target_device_kind, target_platform

__all__ = [
    "DENSE_COST_LIMIT",
    "FILTER_IMPLS",
    "FILTER_OPS",
    "IMPLEMENTATIONS",
    "NCHW_MIN_SIZE",
    "STORE_FINE_GRID_KINDS",
    "choose_downsample_layout",
    "choose_filter_impl",
    "choose_fine_grid_remat",
    "choose_lowpass_before_conv",
    "choose_layout",
    "dense_cost",
    "resolve_filter_impl",
]

# What a caller may ask for, and what "auto" resolves to.
FILTER_IMPLS = ("auto", "fft", "matrix")
IMPLEMENTATIONS = ("fft", "matrix")
FILTER_OPS = ("lowpass", "downsample<s>", "upsample<s>", "resize<m>", "mlp_fast", "mlp_reference")

# Dense-form cost (multiply-adds per sample of the larger grid, `dense_cost`) above which the
# FFT is used. Figures: `benchmarks/results/benchmark.md` (`python -m benchmarks.run --iters 3`,
# idle 2-core Intel Xeon, batch 8 at 224 px, float32), ms matrix vs FFT:
# cpu 512: section "Other ideal filters (forward)": the stem's 224x224 low-pass at 0.75 (cost
#   448) 345 vs 590 on 96 channels and 9.0 vs 15.6 on the 3-channel image; the stride-4
#   filter (cost 70) 70 vs 255; the stride-2 filters (cost <= 42) at 56, 28, 14 px 6.3 vs 23.1,
#   2.9 vs 18.2, 1.5 vs 7.2. Section "AFC MLP per stage" (MLP filters, cost <= 93.3), train
#   step fast/matrix (better layout) vs fast/fft at 56, 28, 14, 7 px: 396 vs 954, 198 vs 438,
#   114 vs 226, 51 vs 104. Section "Models": the AFC-T train step fast/matrix 4,786 vs
#   fast/fft 8,923. So every filter of a 224 px model runs on matrices; 512 is where the dense
#   form's cost (growing with the size) is taken to pass the FFT's: no size between 224 and
#   512 px was measured. (An earlier run on a loaded 2-core AMD EPYC gave the same choices, with the
#   stem's low-pass a tie.)
# gpu 256: NOT measured (no GPU was available). A guess that cuFFT is fast enough to win from
#   the stem's 224x224 low-pass on; only that filter (cost 448) sides differently from the CPU.
# tpu: always matrices (MXU GEMMs), no threshold. TPU compiler, `benchmarks/README.md`
#   section "AFC-T vs baseline-T on a TPU" (issue 12; `python -m benchmarks.tpu_compile`, the
#   AFC-T train step, 32 images per chip on v5e:2x2, bfloat16): filter_impl="fft" 2.6 TFLOP
#   and 549 GB accessed per chip and step, "matrix" 1.38 TFLOP and 109 GB (now 70 GB).
DENSE_COST_LIMIT = {"cpu": 512.0, "gpu": 256.0}

# Smallest map (px) for which the fast MLP's matrix filters run channels-first on a CPU/GPU.
# `benchmarks/results/benchmark.md` (idle 2-core Intel Xeon), section "AFC MLP per stage"
# (fast/matrix nchw vs nhwc, ms eval / train): 56 px 183 / 396 vs 228 / 482 and 28 px 90 / 198
# vs 88 / 215 (NCHW wins the train step); 14 px 39 / 123 vs 34 / 114 and 7 px 29 / 74 vs
# 22 / 51 (NHWC wins). (The run before, 507 s against this one's 601 s on the same idle host,
# timed everything 10-25% faster and made the same choices.)
# 20 lies between the two measured sizes where the winner changes. (An earlier run on a loaded
# AMD EPYC had the change between 56 and 28 px, hence the 40 this replaced.) GPU: not measured,
# follows the CPU rule. TPU: NCHW at every size, TPU compiler (`python -m
# benchmarks.tpu_compile.mlp --layout nchw|nhwc`, issue 12, one AFC MLP forward + backward,
# 32 images on one v5e chip, bfloat16; recorded only here, the model-level result is in
# `benchmarks/README.md`, "AFC-T vs baseline-T on a TPU"): GB accessed at 56, 28, 14, 7 px nchw
# 3.87, 2.25, 1.15, 0.77; nhwc 9.2 (at HIGHEST filter precision; 5.1 for nchw there), 4.22,
# 2.09, 1.33.
NCHW_MIN_SIZE = 20


def dense_cost(n_in: int, n_out: int) -> float:
    """Multiply-adds per sample of the larger grid for the separable dense n_in -> n_out map."""
    return (n_out * n_in * n_in + n_out * n_out * n_in) / max(n_in, n_out) ** 2


def _op_sizes(op: str, size: int) -> list[tuple[int, int]]:
    """The (n_in, n_out) axis maps of `op` (see FILTER_OPS) on a size-`size` axis."""
    if op == "lowpass":
        return [(size, size)]
    if op.startswith("downsample"):
        factor = int(op[len("downsample"):] or 2)
        return [(size, -(-size // factor))]
    if op.startswith("upsample"):
        return [(size, int(op[len("upsample"):] or 2) * size)]
    if op.startswith("resize"):
        return [(size, int(op[len("resize"):]))]
    if op == "mlp_fast":
        m = fine_grid_size(size)
        return [(size, m), (m, size)]
    if op == "mlp_reference":
        return [(size, 2 * size), (2 * size, size)]
    raise ValueError(f"unknown filter op {op!r}; choose one of {FILTER_OPS}")


def _platform(platform: str | None) -> str:
    return normalize_platform(platform) if platform else target_platform()


def choose_filter_impl(op: str, size: int, platform: str | None = None) -> str:
    """The implementation "auto" resolves to for one layer (rule: the module docstring).

    Args:
      op: "lowpass" (full-size low-pass, the stem polynomial), "downsample<s>" (low-pass and
        keep every s-th sample), "upsample<s>", "resize<m>" (N -> m), "mlp_fast" (N -> fine
        grid -> N) or
        "mlp_reference" (N -> 2N -> N); a layer whose filters share one choice names them all.
      size: the longest spatial axis of the layer's input.
      platform: "cpu", "gpu" or "tpu" (default: the target platform).

    Returns:
      "fft" or "matrix".
    """
    platform = _platform(platform)
    if platform == "tpu":
        return "matrix"
    limit = DENSE_COST_LIMIT.get(platform, DENSE_COST_LIMIT["cpu"])
    cost = max(dense_cost(a, b) for a, b in _op_sizes(op, size))
    return "matrix" if cost <= limit else "fft"


def resolve_filter_impl(impl: str, op: str, size: int) -> str:
    """`impl` checked against FILTER_IMPLS; "auto" becomes `choose_filter_impl(op, size)`."""
    if impl not in FILTER_IMPLS:
        raise ValueError(f"unknown filter implementation {impl!r}; choose one of {FILTER_IMPLS}")
    return choose_filter_impl(op, size) if impl == "auto" else impl


def choose_layout(size: int, impl: str = "matrix", platform: str | None = None) -> str:
    """Layout of the fast MLP's hidden (4C) map while its fine-grid filters run.

    FFT: "nchw" (the transforms then run on the two minor axes; in NHWC XLA transposes around
    every transform). Matrix: "nchw" (each filter a plain GEMM on the last axis, two transposes
    of the fine map) on a TPU and, elsewhere, for maps of NCHW_MIN_SIZE px and more; "nhwc"
    (batched GEMMs in place, no transposes) for smaller maps, where the transposes cost more
    than they save.

    Args:
      size: the shortest spatial axis of the map.
      impl: the resolved filter implementation, "fft" or "matrix".
      platform: "cpu", "gpu" or "tpu" (default: the target platform).
    """
    if impl == "fft":
        return "nchw"
    if _platform(platform) == "tpu":
        return "nchw"
    return "nchw" if size >= NCHW_MIN_SIZE else "nhwc"


def choose_downsample_layout(platform: str | None = None) -> str:
    """Layout an NHWC map is filtered in by `ideal_downsample`'s matrices: "nchw" on a TPU
    (transposed, filtered, and the smaller output transposed back), "nhwc" elsewhere.

    XLA:TPU wants the contracted axis of each filter product minor. In NHWC it transposes the
    full-size map for one product and its gradient back; the AFC stem's stride-4 filter then
    moves (32, 224, 224, 96) bfloat16 maps per chip three times. Channels-first, the input is
    transposed inside the fusion that produces it. TPU compiler, AFC-T train step, 32 images
    per chip on v5e:2x2, bfloat16 (`python -m benchmarks.tpu_compile`, `benchmarks/README.md`
    "AFC-T vs baseline-T on a TPU"): HBM per chip 4.69 GB NHWC, 4.25 GB channels-first, bytes
    accessed 70.5 vs 69.7 GB. CPU/GPU: not measured; NHWC as before.
    """
    return "nchw" if _platform(platform) == "tpu" else "nhwc"


# Chips where the fine-grid maps are better stored (`choose_fine_grid_remat`), by device_kind.
STORE_FINE_GRID_KINDS = ("TPU v5",)  # v5p ("TPU v5 lite" is v5e)


def choose_fine_grid_remat(platform: str | None = None, device_kind: str | None = None) -> bool:
    """Whether the fast AFC MLP recomputes its fine-grid map in the backward pass ("auto").

    TPU: yes, except on v5p. Storing the map keeps 2.25x the hidden map per block in HBM until
    the backward pass; recomputing it costs the two interpolation products once more. A TPU
    train step is bound by HBM traffic many times over (AFC-T per v5e chip: 7 ms of FLOPs
    against 84 ms of bytes), so the extra products are cheap, and on v5e and v6e the smaller
    working set also moves fewer bytes. TPU compiler (`python -m benchmarks.tpu_compile`),
    stored vs recomputed:
    - AFC-T, 32 images per v5e chip (v5e:2x2, `benchmarks/README.md` "AFC-T vs baseline-T on a
      TPU"): 1.387 vs 1.458 TFLOP, 69.7 vs 68.7 GB accessed, 4.25 vs 3.69 GB HBM, roofline
      85.1 vs 83.9 ms.
    - Batch 4096 (`benchmarks/results/tpu_compile.md`, AFC rows before and after): v5e:16x16
      AFC-T/S/B/L/XL and v6e:16x16 AFC-T use 10-25% less HBM and the same or fewer bytes
      (AFC-T 41.0 -> 35.6 GB, AFC-B 79.5 -> 67.2 GB).
    - v4:2x2x1, AFC-T at 32 images per chip: 73.8 vs 73.3 GB, 6.91 vs 3.33 GB HBM.
    - v5p:4x4x8 ("TPU v5", STORE_FINE_GRID_KINDS): less HBM (AFC-T 4.90 -> 4.10 GB) but more
      bytes (AFC-T 60.4 -> 63.6 GB, AFC-B 113.7 -> 129.6 GB), so it stores the maps.
    CPU/GPU: no (a CPU step is not bound by memory traffic alone, and the model's peak memory
    there is set by the 224 px stem); not measured.

    Args:
      platform: "cpu", "gpu" or "tpu"; None: the target platform, with the target's
        `device_kind` (`afc_jax.ops.platform.target_device_kind`).
      device_kind: the chips' `device_kind` when `platform` is given (None: unknown, which
        recomputes on a TPU).
    """
    if platform is None:
        platform, device_kind = _platform(None), target_device_kind()
    if _platform(platform) != "tpu":
        return False
    return device_kind not in STORE_FINE_GRID_KINDS


def choose_lowpass_before_conv(platform: str | None = None) -> bool:
    """Whether "conv (stride 1) -> ideal low-pass -> keep every f-th sample" (AFC's downsampling
    layers) runs as "ideal low-pass of the conv's input -> conv at stride f".

    The two are the same map (`afc_jax.models.convnext.resample_folds_into_conv`); the
    second filters the conv's input channels (half the output channels) at full size and
    leaves the conv 1/f^2 of its work.
    - CPU: yes. AFC-T, batch 8 at 224 px, float32, one pinned core while the other core
      compiled (an A/B of the two programs in one process, indicative; the idle benchmark is
      in `benchmarks/results/benchmark.md`): train step 9.13 vs 9.51 s, eval 2.15 vs 2.30 s.
    - TPU: no. TPU compiler (`python -m benchmarks.tpu_compile`), AFC-T train step, 32 images
      per v5e chip (v5e:2x2), bfloat16: 1.360 vs 1.458 TFLOP, but 72.4 vs 68.7 GB accessed and
      4.71 vs 3.69 GB HBM (roofline 88.4 vs 83.9 ms). Each downsampling layer alone moves fewer
      bytes folded (`python -m benchmarks.tpu_compile.parts`: stage 2 1.24 vs 1.46 GB, stage 3
      0.62 vs 0.61 GB); the whole step's extra bytes are the compiler's asynchronous slices and
      copies elsewhere (its scheduling), which this rule follows all the same, because the
      step is bound by bytes.
    - GPU: follows the CPU (less work; not measured).
    """
    return _platform(platform) != "tpu"
