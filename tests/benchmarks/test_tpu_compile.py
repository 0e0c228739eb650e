"""`python -m benchmarks.tpu_compile` compiles the nano AFC train step for a TPU (v5e:2x2).

The real TPU compiler (libtpu, from the `test` extra) runs in a subprocess, so the other tests
never load libtpu (tests/conftest.py pins them to the CPU) and pytest-xdist workers do not
contend for its lock (`ALLOW_MULTIPLE_LIBTPU_LOAD=1`). Three compiles (v5e, two v5e slices, v4)
and two quick error checks, about two minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason='libtpu is not installed (pip install -e ".[test]" installs it on Linux x86-64)',
)


def _compile(tmp_path, *overrides):
    env = dict(os.environ, ALLOW_MULTIPLE_LIBTPU_LOAD="1", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "report.json"
    cmd = [
        sys.executable, "-m", "benchmarks.tpu_compile", "--topology", "v5e:2x2",
        "--config", "configs/digits.py:model=convnext_afc", "--config.batch_size=32",
        "--config.model.dtype=bfloat16", "--steps", "train_step", "--json", str(out),
        "--hlo_dir", str(tmp_path / "hlo"), *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    return proc, out


def test_nano_afc_train_step_compiles_for_v5e_fits_and_keeps_ffts_in_float32(tmp_path):
    # FFT filters forced: "auto" picks dense DFT matrices on a TPU, and the point here is that
    # bfloat16 compute leaves every FFT in float32 (complex64).
    proc, out = _compile(tmp_path, "--config.model.filter_impl=fft")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["topology"], report["devices"], report["chip"]) == ("v5e:2x2", 4, "v5e")
    assert report["target_platform"] == "tpu"
    assert report["device_kind"].startswith("TPU")
    assert report["global_batch"] == 32 and report["dtype"] == "bfloat16"
    step = report["train_step"]
    assert step["fits"] and 0 < step["hbm_bytes_per_device"] <= step["hbm_capacity_bytes"]
    assert step["flops_per_device"] > 0 and step["bytes_accessed_per_device"] > 0
    assert step["roofline"]["step_time_s"] > 0
    fft = step["fft"]
    assert fft["lowered"], "no FFT in the program although filter_impl=fft"
    for types in fft["lowered"]:  # e.g. "f32 -> complex<f32>": no bfloat16 transform
        assert "bf16" not in types and set(types.replace(" -> ", ",").split(",")) <= {
            "f32",
            "complex<f32>",
        }, types
    # The TPU compiler turns FFTs into DFT products; they must stay float32 at full precision
    # (FFTs ignore the matmul precision setting: jax issue 9881).
    assert fft["compiled"], "the FFTs' products were not found in the compiled program"
    for product in fft["compiled"]:
        assert product.startswith("f32 precision=highest,highest"), fft["compiled"]
    hlo = (tmp_path / "hlo" / "train_step.hlo.txt").read_text()
    # The TPU's choices, although the compiling process runs on the CPU: the depthwise 7x7
    # convs are native grouped convolutions, not the CPU's shift-and-add.
    assert "feature_group_count=" in hlo
    assert "bf16[" in hlo  # bfloat16 compute did reach the program


def test_unknown_topology_is_a_clear_error(tmp_path):
    proc, _ = _compile(tmp_path, "--topology", "v9x:2x2")
    assert proc.returncode == 2
    assert "unknown TPU kind 'v9x'" in proc.stderr and "v5e:16x16" in proc.stderr


def test_two_slices_compile_with_the_data_axis_across_the_slices(tmp_path):
    # Multislice: two v5e:2x2 slices joined by the data-centre network. The mesh comes from
    # `afc_jax.parallel.device_grid` (create_hybrid_device_mesh over the chips' slice_index).
    proc, out = _compile(tmp_path, "--num_slices", "2", "--config.mesh.slices=2",
                         "--config.batch_size=64")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["slices"], report["devices"], report["hosts"]) == (2, 8, 2)
    assert report["mesh"] == {"data": 8, "fsdp": 1} and report["train_step"]["fits"]
    assert "2 x v5e:2x2" in proc.stdout
    hlo = (tmp_path / "hlo" / "train_step.hlo.txt").read_text()
    # In-slice all-reduces span one slice's 4 chips; the gradients cross slices through the
    # TPU runtime's cross-slice (megascale) transfers.
    assert "replica_groups={{0,1,2,3}}" in hlo and "megascale" in hlo


def test_slices_without_mesh_slices_is_a_clear_error(tmp_path):
    proc, _ = _compile(tmp_path, "--num_slices", "2")
    assert proc.returncode == 2
    assert "span 2 slices; set mesh.slices=2" in proc.stderr


def test_v4_compiles_with_one_device_per_chip(tmp_path):
    # libtpu describes v4 per TensorCore unless asked for megacore; jax.make_mesh needs chips.
    proc, out = _compile(tmp_path, "--topology", "v4:2x2x1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["chip"], report["devices"], report["device_kind"]) == ("v4", 4, "TPU v4")
