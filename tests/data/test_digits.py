"""The bundled `afc_digits` TFDS dataset: split, counts, band-limitedness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from afc_jax.data import digits
from afc_jax.ops import ideal_downsample, ideal_lowpass, ideal_upsample
from tests.data import digits_data_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def splits():
    builder = digits.prepare_digits(digits_data_dir(), 4)
    out = {}
    for split in ("train", "test"):
        ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        out[split] = ex
    return builder, out


def test_counts_shapes_range(splits):
    builder, data = splits
    assert builder.name == "afc_digits" and builder.builder_config.name == "up4"
    assert builder.info.splits["train"].num_examples == digits.NUM_TRAIN == 1437
    assert builder.info.splits["test"].num_examples == digits.NUM_TEST == 360
    assert str(digits_data_dir()) in str(builder.data_dir)  # built into the given data_dir
    for split, n in (("train", 1437), ("test", 360)):
        img = data[split]["image"]
        assert img.shape == (n, 32, 32, 3) and img.dtype == np.float32
        np.testing.assert_array_equal(img[..., 0], img[..., 2])  # grey replicated
        assert -0.6 < img.min() < 0 and 1 < img.max() < 1.4  # [0, 1] plus ringing
        assert 0.05 < img.mean() < 0.5
        assert set(np.unique(data[split]["label"])) == set(range(10))


def test_split_is_stratified_and_deterministic(splits):
    from sklearn.datasets import load_digits

    _, data = splits
    train_idx, test_idx = data["train"]["index"], data["test"]["index"]
    assert len(set(train_idx) | set(test_idx)) == 1797 and not set(train_idx) & set(test_idx)
    ref_train, ref_test = digits.digits_split_indices()
    np.testing.assert_array_equal(np.sort(test_idx), ref_test)
    np.testing.assert_array_equal(np.sort(train_idx), ref_train)
    target = load_digits().target
    np.testing.assert_array_equal(data["test"]["label"], target[test_idx])
    per_class = np.bincount(target[test_idx], minlength=10)
    expected = 0.2 * np.bincount(target, minlength=10)
    assert np.abs(per_class - expected).max() <= 1


def test_images_are_ideal_upsampled_and_band_limited(splits):
    from sklearn.datasets import load_digits

    _, data = splits
    img = data["test"]["image"][..., :1]
    small = (load_digits().images[data["test"]["index"]] / 16.0).astype(np.float32)[..., None]
    # samples kept exactly, and equal to the ideal upsampling of the 8x8 digit
    np.testing.assert_allclose(img[:, ::4, ::4], small, atol=2e-6)
    np.testing.assert_allclose(img, ideal_upsample(jnp.asarray(small), 4), atol=1e-6)
    # band-limited: no DFT energy at |k| > 4 on the 32-point grid (a quarter of its band)
    spec = np.abs(np.fft.fft2(img[..., 0].astype(np.float64), axes=(1, 2)))
    k = np.abs(np.fft.fftfreq(32, 1 / 32))
    outside = (k[:, None] > 4) | (k[None, :] > 4)
    assert spec[:, outside].max() < 1e-4 * spec.max()
    np.testing.assert_allclose(ideal_lowpass(jnp.asarray(img), 0.25 + 1e-3), img, atol=1e-5)
    # The 8x8 digits carry energy at their own Nyquist frequency (|k| = 4), which the strict
    # filter rule (|k| < cutoff N / 2) drops at cutoff 1/4; without it the ideal round trip
    # is exact: ideal_downsample(ideal_upsample(x, 4), 4) == x.
    x = ideal_lowpass(jnp.asarray(small), 0.99)
    np.testing.assert_allclose(ideal_downsample(ideal_upsample(x, 4), 4), x, atol=1e-5)


def test_other_sizes_and_bad_factor(tmp_path):
    with pytest.raises(ValueError, match="positive integer"):
        digits.digits_builder(str(tmp_path), 0)
    b = digits.digits_builder(str(tmp_path), 3)  # a custom config, not built
    assert b.builder_config.name == "up3" and b.image_size == 24 and not b.is_prepared()
    assert b.info.features["image"].shape == (24, 24, 3)


def test_a_two_process_run_prepares_a_shared_data_dir(tmp_path):
    """What train.py's processes do on one machine: jax.distributed with 2 processes, then both
    prepare the same, empty data_dir at once. They take turns on a lock (no half-built dataset
    is read) and compute on their own devices (a computation on jax.devices()[0] fails on
    process 1, which cannot address it); both end with the whole dataset."""
    code = """
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[2], num_processes=2, process_id=int(sys.argv[3]))
from afc_jax.data import digits
b = digits.prepare_digits(sys.argv[1], 2)
print("sizes", b.info.splits["train"].num_examples, b.info.splits["test"].num_examples)
"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), address, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        assert "sizes 1437 360" in out, out[-3000:]
    assert len(list((tmp_path / "afc_digits" / "up2").iterdir())) == 1  # one version folder
