"""Shared helpers of the input-pipeline tests (TensorFlow / TFDS on the CPU, tiny images)."""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import tempfile

import numpy as np

from configs.base import base_config


@functools.cache
def digits_data_dir() -> str:
    """A TFDS data_dir holding afc_digits/up4 (32x32), built once per test process."""
    from afc_jax.data import digits

    path = tempfile.mkdtemp(prefix="afc_digits_tfds_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    digits.prepare_digits(path, 4)
    return path


def no_augment(config):
    """Switches every train augmentation off (train images = the stored images, normalised)."""
    a = config.augment
    a.random_resized_crop = False
    a.hflip = False
    a.randaugment = False
    a.color_jitter = 0.0
    a.random_erasing = 0.0
    return config


def digits_config(**data_overrides):
    """base_config() for the bundled digits at 32x32, small batches, every augmentation on."""
    c = base_config()
    c.data.source = "digits"
    c.data.data_dir = digits_data_dir()
    c.data.image_size = 32
    c.data.num_classes = 10
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.eval_crop_pct = 1.0
    c.data.mean = (0.5, 0.5, 0.5)
    c.data.std = (0.25, 0.25, 0.25)
    c.data.shuffle_buffer = 256
    c.batch_size = 64
    c.eval_batch_size = 48
    for key, value in data_overrides.items():
        setattr(c.data, key, value)
    return c


def image_hash(image: np.ndarray) -> str:
    """Content hash identifying one (deterministically preprocessed) image."""
    return hashlib.sha1(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest()


def batches_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
