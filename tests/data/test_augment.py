"""TF-side augmentations: shapes, dtypes, value ranges, determinism, op semantics."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from afc_jax.data import augment

SIZE = 48


@pytest.fixture(scope="module")
def photo():
    """scikit-image's astronaut at 64x64 as float32 0..255 integers (H, W, 3)."""
    from skimage import data as skdata

    img = Image.fromarray(skdata.astronaut()).resize((64, 64), Image.BICUBIC)
    return tf.constant(np.asarray(img, np.float32))


def _seed(i):
    return tf.constant([i, 7], tf.int64)


@pytest.mark.parametrize("name", augment.RANDAUGMENT_OP_NAMES)
def test_every_randaugment_op_runs(photo, name):
    outs = [
        augment.apply_op(name, photo, level, _seed(s), (124.0, 116.0, 104.0))
        for level, s in ((0.0, 0), (9.0, 1), (10.0, 2))
    ]
    for out in outs:
        out = out.numpy()
        assert out.shape == photo.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 255
        np.testing.assert_array_equal(out, np.round(out))  # on the uint8 grid
    # pure function of (image, level, seed)
    again = augment.apply_op(name, photo, 9.0, _seed(1), (124.0, 116.0, 104.0)).numpy()
    np.testing.assert_array_equal(again, outs[1].numpy())
    if name in ("AutoContrast", "Equalize", "Invert", "Solarize", "SolarizeAdd", "Posterize"):
        return
    # geometric and enhancement ops are the identity at level 0
    np.testing.assert_allclose(outs[0].numpy(), photo.numpy(), atol=1.0)


def test_op_semantics(photo):
    x = photo.numpy()
    fill = (0.0, 0.0, 0.0)

    def op(name, level, seed=0):
        return augment.apply_op(name, photo, level, _seed(seed), fill).numpy()

    np.testing.assert_array_equal(op("Invert", 5.0), 255 - x)
    np.testing.assert_array_equal(op("Posterize", 10.0), 0 * x)  # 0 bits kept
    np.testing.assert_array_equal(op("Posterize", 5.0), np.floor(x / 64) * 64)  # 4 - 2 bits
    np.testing.assert_array_equal(op("Solarize", 5.0), np.where(x >= 128, 255 - x, x))
    np.testing.assert_array_equal(
        op("SolarizeAdd", 10.0), np.where(x < 128, np.minimum(x + 110, 255), x)
    )
    ac = op("AutoContrast", 0.0)
    assert (ac.reshape(-1, 3).min(0) == 0).all() and (ac.reshape(-1, 3).max(0) == 255).all()
    eq = op("Equalize", 0.0)
    hist = np.histogram(eq[..., 0], bins=4, range=(0, 256))[0]
    assert hist.min() > 0.15 * hist.sum()  # roughly flat
    b = op("Brightness", 10.0, seed=3)
    assert not np.array_equal(b, x)
    candidates = [np.clip(np.round(f * x), 0, 255) for f in (0.1, 1.9)]  # level 10: 1 +- 0.9
    assert min(np.abs(b - c).max() for c in candidates) <= 1.0
    # TranslateX moves by 0.045 * level of the width: 5 columns at this level, either way
    t = op("TranslateX", 50 / (0.45 * 64), seed=1)
    errors = [np.abs(np.roll(x, s, axis=1) - t)[:, 8:-8].max() for s in (-5, 5)]
    assert min(errors) <= 1.0


def test_rand_augment_determinism(photo):
    def run(seed):
        return augment.rand_augment(
            photo,
            _seed(seed),
            num_layers=2,
            magnitude=9.0,
            magnitude_std=0.5,
            fill=(124.0, 116.0, 104.0),
        ).numpy()

    outs = [run(s) for s in range(6)]
    np.testing.assert_array_equal(run(3), outs[3])
    for out in outs:
        assert out.shape == (64, 64, 3) and out.dtype == np.float32 and np.isfinite(out).all()
        assert 0 <= out.min() and out.max() <= 255
    assert len({o.tobytes() for o in outs}) >= 4  # different seeds, different augmentations


def test_random_resized_crop_boxes():
    areas = []
    for s in range(40):
        h, w = 30 + s, 90 - s
        top, left, ch, cw = (int(v) for v in augment.random_resized_crop_box(_seed(s), h, w))
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
        areas.append(ch * cw / (h * w))
    assert 0.07 <= min(areas) and max(areas) <= 1.0
    # extreme aspect ratio: falls back to a centred crop clamped to the ratio range
    top, left, ch, cw = (
        int(v) for v in augment.random_resized_crop_box(_seed(0), 10, 200, scale=(0.99, 1.0))
    )
    assert (ch, cw) == (10, 13) and left == (200 - 13) // 2


def test_random_resized_crop_image_and_bytes(photo):
    out = augment.random_resized_crop(photo, _seed(1), SIZE)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == tf.float32
    np.testing.assert_array_equal(out, augment.random_resized_crop(photo, _seed(1), SIZE))
    arr = photo.numpy().astype(np.uint8)
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        raw = tf.constant(buf.getvalue())
        a = augment.decode_random_resized_crop(raw, _seed(2), SIZE).numpy()
        b = augment.decode_random_resized_crop(raw, _seed(2), SIZE).numpy()
        assert a.shape == (SIZE, SIZE, 3) and np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
        assert 0 <= a.mean() <= 255


def test_flip_and_eval_resize(photo):
    flips = [augment.random_flip(photo, _seed(s)).numpy() for s in range(16)]
    flipped = [np.array_equal(f, photo.numpy()[:, ::-1]) for f in flips]
    assert 3 <= sum(flipped) <= 13
    assert all(f or np.array_equal(g, photo.numpy()) for f, g in zip(flipped, flips))
    out = augment.resize_short_center_crop(photo[:, :40], 32, 0.875)
    assert out.shape == (32, 32, 3)
    same = augment.resize_short_center_crop(photo, 64, 1.0)  # already that size: untouched
    np.testing.assert_array_equal(same, photo)


def test_color_jitter(photo):
    img = photo / 255.0
    out = augment.color_jitter(img, _seed(0), 0.4).numpy()
    assert out.shape == (64, 64, 3) and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, augment.color_jitter(img, _seed(0), 0.4).numpy())
    assert not np.allclose(out, img.numpy())


def test_random_erasing():
    img = tf.zeros((40, 30, 3))
    np.testing.assert_array_equal(augment.random_erasing(img, _seed(0), prob=0.0), img)
    fractions = []
    for s in range(20):
        out = augment.random_erasing(img, _seed(s), prob=1.0).numpy()
        np.testing.assert_array_equal(out, augment.random_erasing(img, _seed(s), prob=1.0))
        erased = np.any(out != 0, axis=-1)
        fractions.append(erased.mean())
        if erased.any():  # one rectangle of N(0, 1) noise
            rows, cols = np.where(erased)
            box = erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert box.all()
            assert 0.3 < out[erased].std() < 2.0
    fractions = np.array(fractions)
    assert (fractions > 0).sum() >= 15  # some draws may not fit in 10 attempts
    assert fractions.max() <= 1 / 3 + 0.05 and fractions[fractions > 0].min() >= 0.015
    hits = sum(
        bool(np.any(augment.random_erasing(img, _seed(s), prob=0.25).numpy() != 0))
        for s in range(40)
    )
    assert 3 <= hits <= 20
