"""TF-side augmentations: shapes, dtypes, value ranges, determinism, op semantics."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from afc_jax.data import augment, pipeline
from configs import imagenet
from tests.helpers import ks_statistic

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
    if name in ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing"):
        return
    # geometric and enhancement ops are the identity at level 0
    np.testing.assert_allclose(outs[0].numpy(), photo.numpy(), atol=1.0)


def test_op_semantics(photo):
    x = photo.numpy()
    fill = (0.0, 0.0, 0.0)

    def op(name, level, seed=0):
        return augment.apply_op(name, photo, level, _seed(seed), fill).numpy()

    np.testing.assert_array_equal(op("Invert", 5.0), 255 - x)
    np.testing.assert_array_equal(op("PosterizeIncreasing", 10.0), 0 * x)  # 0 bits kept
    np.testing.assert_array_equal(op("PosterizeIncreasing", 5.0), np.floor(x / 64) * 64)  # 2 bits
    np.testing.assert_array_equal(op("SolarizeIncreasing", 5.0), np.where(x >= 128, 255 - x, x))
    np.testing.assert_array_equal(
        op("SolarizeAdd", 10.0), np.where(x < 128, np.minimum(x + 110, 255), x)
    )
    ac = op("AutoContrast", 0.0)
    assert (ac.reshape(-1, 3).min(0) == 0).all() and (ac.reshape(-1, 3).max(0) == 255).all()
    eq = op("Equalize", 0.0)
    hist = np.histogram(eq[..., 0], bins=4, range=(0, 256))[0]
    assert hist.min() > 0.15 * hist.sum()  # roughly flat
    b = op("BrightnessIncreasing", 10.0, seed=3)
    assert not np.array_equal(b, x)
    candidates = [np.clip(np.round(f * x), 0, 255) for f in (0.1, 1.9)]  # level 10: 1 +- 0.9
    assert min(np.abs(b - c).max() for c in candidates) <= 1.0
    # TranslateX moves by 0.045 * level of the width: 5 columns at this level, either way
    t = op("TranslateXRel", 50 / (0.45 * 64), seed=1)
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
    # The same seed crops the same box from bytes as from the decoded array: exactly for a
    # lossless PNG, within JPEG's compression error for a JPEG.
    from_array = augment.random_resized_crop(
        tf.constant(arr), _seed(2), SIZE, uint8_grid=True
    ).numpy()
    for fmt, mean_tol in (("PNG", 0.0), ("JPEG", 6.0)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, quality=95)
        raw = tf.constant(buf.getvalue())
        a = augment.decode_random_resized_crop(raw, _seed(2), SIZE).numpy()
        b = augment.decode_random_resized_crop(raw, _seed(2), SIZE).numpy()
        assert a.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(a, b)
        assert np.mean(np.abs(a - from_array)) <= mean_tol, fmt


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


# ----------------------------------------------------------------------------- the official recipe
# timm's rand-m9-mstd0.5-inc1, RandomErasing(0.25, mode="pixel", max_count=1) and the evaluation
# transform, checked against their definitions and against PIL (the official pipeline's library).

TIMM_INCREASING_OPS = (  # timm auto_augment._RAND_INCREASING_TRANSFORMS, in order
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)


def test_randaugment_uses_timms_increasing_op_list():
    assert augment.RANDAUGMENT_OP_NAMES == TIMM_INCREASING_OPS


def test_increasing_ops_at_each_level_equal_pil(photo):
    """Level l in [0, 10]: PosterizeIncreasing keeps 4 - int(0.4 l) bits, SolarizeIncreasing
    inverts from 256 - int(25.6 l), SolarizeAdd adds int(11 l) below 128, and the enhancements
    use PIL's ImageEnhance with factor 1 +- 0.9 l / 10 (the sign drawn per application)."""
    pil = Image.fromarray(photo.numpy().astype(np.uint8))
    x = photo.numpy()

    def ours(name, level, seed=0):
        fill = (124.0, 116.0, 104.0)
        return augment.apply_op(name, photo, level, _seed(seed), fill).numpy()

    for level in (0.0, 2.5, 4.0, 7.5, 9.0, 10.0):
        bits = 4 - int(level / 10 * 4)
        want = np.asarray(ImageOps.posterize(pil, bits), np.float32) if bits else 0 * x
        np.testing.assert_array_equal(ours("PosterizeIncreasing", level), want)
        threshold = 256 - int(level / 10 * 256)
        want = np.asarray(ImageOps.solarize(pil, threshold), np.float32)
        np.testing.assert_array_equal(ours("SolarizeIncreasing", level), want)
        add = int(level / 10 * 110)
        want = np.where(x < 128, np.minimum(x + add, 255), x)
        np.testing.assert_array_equal(ours("SolarizeAdd", level), want)
    np.testing.assert_array_equal(ours("AutoContrast", 5.0), ImageOps.autocontrast(pil))
    np.testing.assert_array_equal(ours("Equalize", 5.0), ImageOps.equalize(pil))
    np.testing.assert_array_equal(ours("Invert", 5.0), ImageOps.invert(pil))
    enhancers = {
        "ColorIncreasing": ImageEnhance.Color,
        "ContrastIncreasing": ImageEnhance.Contrast,
        "BrightnessIncreasing": ImageEnhance.Brightness,
        "SharpnessIncreasing": ImageEnhance.Sharpness,
    }
    for name, enhancer in enhancers.items():
        for level in (3.0, 9.0, 10.0):
            signs = set()
            for seed in range(12):
                out = ours(name, level, seed)
                errors = {
                    sign: np.abs(out - np.asarray(enhancer(pil).enhance(1 + sign * 0.09 * level)))
                    for sign in (1, -1)
                }
                sign = min(errors, key=lambda k: errors[k].max())
                assert errors[sign].max() <= 1.0, (name, level, seed)  # measured: 0
                signs.add(sign)
            assert signs == {1, -1}, name  # both directions occur


def _draws(n, magnitude=9.0, magnitude_std=0.5, prob=0.5):
    fn = tf.function(
        lambda seeds: tf.map_fn(
            lambda seed: augment.rand_augment_layer_draws(seed, magnitude, magnitude_std, prob)[:3],
            seeds,
            fn_output_signature=(tf.int32, tf.float32, tf.bool),
        )
    )
    seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(11, tf.int64))], 1)
    return [t.numpy() for t in fn(seeds)]




def _ks_bound(n, m) -> float:
    return 1.95 * math.sqrt((n + m) / (n * m))  # p ~ 0.001 for equal distributions


def test_randaugment_layer_draws_follow_m9_mstd05():
    """Per layer: an op uniformly from the 15, applied with probability 0.5, at a level
    ~ N(9, 0.5) clipped to [0, 10]; with mstd 0 the level is exactly the magnitude."""
    n = 3000
    index, level, apply = _draws(n)
    counts = np.bincount(index, minlength=15)
    assert counts.shape == (15,) and np.all(np.abs(counts - n / 15) < 5 * math.sqrt(n / 15))
    assert abs(apply.mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    assert level.min() >= 0 and level.max() <= 10
    reference = np.clip(np.random.default_rng(0).normal(9.0, 0.5, n), 0, 10)
    assert ks_statistic(level, reference) < _ks_bound(n, n)
    assert abs(level.std() - reference.std()) < 0.05
    _, fixed, _ = _draws(50, magnitude_std=0.0)
    np.testing.assert_array_equal(fixed, 9.0)


def _reference_erasing_boxes(rng, n, h, w, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3)):
    """timm RandomErasing._erase's box sampling (max_count 1), from its definition."""
    out = []
    for _ in range(n):
        for _ in range(10):
            area = rng.uniform(*scale) * h * w
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if ew < w and eh < h:
                out.append((eh, ew))
                break
    return np.asarray(out, np.float64)


def test_random_erasing_boxes_follow_timms_definition():
    h = w = 224
    n = 1500
    boxes = tf.function(
        lambda seeds: tf.map_fn(
            lambda seed: tf.stack(augment.random_erasing_box(seed, h, w)[:4]),
            seeds,
            fn_output_signature=tf.int32,
        )
    )
    seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(5, tf.int64))], 1)
    top, left, eh, ew = boxes(seeds).numpy().T.astype(np.float64)
    assert (top >= 0).all() and (top + eh <= h).all() and (left >= 0).all()
    assert (left + ew <= w).all() and (eh < h).all() and (ew < w).all()
    fraction = eh * ew / (h * w)
    log_aspect = np.log(eh / ew)
    # the erased area fraction lies in [0.02, 1/3] and the aspect in [0.3, 1/0.3], up to the
    # rounding of the sides to whole pixels
    assert fraction.min() >= 0.02 * 0.9 and fraction.max() <= (1 / 3) * 1.1
    assert log_aspect.min() >= math.log(0.3) - 0.1 and log_aspect.max() <= -math.log(0.3) + 0.1
    ref = _reference_erasing_boxes(np.random.default_rng(0), n, h, w)
    bound = _ks_bound(n, len(ref))
    assert ks_statistic(fraction, ref[:, 0] * ref[:, 1] / (h * w)) < bound
    assert ks_statistic(log_aspect, np.log(ref[:, 0] / ref[:, 1])) < bound
    # the position is uniform over the places the box fits
    assert abs(np.mean(top / (h - eh + 1e-9)) - 0.5) < 0.05


def test_random_erasing_fills_each_pixel_and_channel_with_normal_noise():
    img = tf.fill((224, 224, 3), 7.0)
    for s in range(20):
        out = augment.random_erasing(img, _seed(s), prob=1.0).numpy()
        erased = out != 7.0
        if erased.sum() > 5000:
            break
    noise = out[erased.all(-1)]  # (pixels, 3)
    assert noise.size > 5000 and erased.any(-1).sum() == erased.all(-1).sum()
    reference = np.random.default_rng(0).standard_normal(noise.size)
    assert ks_statistic(noise.ravel(), reference) < _ks_bound(noise.size, noise.size)
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.05  # channels independent
    assert abs(np.corrcoef(noise[:-1, 0], noise[1:, 0])[0, 1]) < 0.05  # pixels independent


# ----------------------------------------------------------------------------- vs PIL


def _skimage_file(name):
    from skimage import data as skdata

    return os.path.join(os.path.dirname(skdata.__file__), name)


def _encoded_photos():
    """(name, encoded bytes): scikit-image's bundled photos as files (rocket is a JPEG) and a
    small crop saved as PNG (an upsampling case)."""
    from skimage import data as skdata

    photos = []
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"):
        with open(_skimage_file(name), "rb") as f:
            photos.append((name, f.read()))
    buf = io.BytesIO()
    Image.fromarray(skdata.coffee()[40:240, 100:270]).save(buf, format="PNG")
    photos.append(("coffee_crop_200x170.png", buf.getvalue()))
    return photos


def _pil_eval_transform(encoded, size=224, crop_pct=0.875, mean=None, std=None):
    """The official evaluation transform with PIL: Resize(int(size / crop_pct), BICUBIC) (the
    short side; the long side int(short * long / short_side)), CenterCrop(size) at
    int(round((new - size) / 2)), ToTensor, Normalize."""
    im = Image.open(io.BytesIO(encoded)).convert("RGB")
    w, h = im.size
    short = int(size / crop_pct)
    ow, oh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    im = im.resize((ow, oh), Image.BICUBIC)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    x = np.asarray(im.crop((left, top, left + size, top + size)), np.float64) / 255.0
    return (x - np.asarray(mean)) / np.asarray(std)


def test_eval_transform_matches_pil_on_real_photos():
    config = imagenet.get_config()
    assert (config.data.image_size, config.data.eval_crop_pct) == (224, 0.875)
    preprocess = pipeline._eval_preprocess_fn(config, "encoded")
    std = np.asarray(config.data.std)
    for name, encoded in _encoded_photos():
        got = preprocess(tf.constant(encoded)).numpy()
        want = _pil_eval_transform(encoded, mean=config.data.mean, std=config.data.std)
        assert got.shape == (224, 224, 3), name
        grey_levels = np.abs(got - want) * std * 255.0
        assert grey_levels.max() <= 1.0 + 1e-3, (name, grey_levels.max())  # within 1/255
        assert np.mean(grey_levels > 0.5) < 0.01, name  # and almost all pixels exact


def test_train_crop_resize_matches_pil_on_a_jpeg():
    """decode_random_resized_crop (JPEG decoded in the crop window) equals PIL decoding the
    whole file, cropping the same box and resizing it (bicubic) within one grey level."""
    with open(_skimage_file("rocket.jpg"), "rb") as f:
        encoded = f.read()
    pil = Image.open(io.BytesIO(encoded)).convert("RGB")
    for s in range(4):
        top, left, ch, cw = (
            int(v) for v in augment.random_resized_crop_box(_seed(s), pil.size[1], pil.size[0])
        )
        want = pil.crop((left, top, left + cw, top + ch)).resize((SIZE, SIZE), Image.BICUBIC)
        got = augment.decode_random_resized_crop(tf.constant(encoded), _seed(s), SIZE).numpy()
        assert np.abs(got - np.asarray(want, np.float32)).max() <= 1.0, s


def _reference_crop_boxes(rng, n, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """timm's RandomResizedCropAndInterpolation.get_params, from its definition: (h, w)."""
    out = []
    for _ in range(n):
        for _ in range(10):
            area = rng.uniform(*scale) * h * w
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if cw <= w and ch <= h:
                out.append((ch, cw))
                break
        else:  # fallback: the whole image clamped to the ratio range, centred
            in_ratio = w / h
            if in_ratio < ratio[0]:
                out.append((int(round(w / ratio[0])), w))
            elif in_ratio > ratio[1]:
                out.append((h, int(round(h * ratio[1]))))
            else:
                out.append((h, w))
    return np.asarray(out, np.float64)


def test_random_resized_crop_boxes_follow_timms_definition():
    h, w, n = 375, 500, 1500  # a typical ImageNet shape
    boxes = tf.function(
        lambda seeds: tf.map_fn(
            lambda seed: tf.stack(augment.random_resized_crop_box(seed, h, w)),
            seeds,
            fn_output_signature=tf.int32,
        )
    )
    seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(9, tf.int64))], 1)
    top, left, ch, cw = boxes(seeds).numpy().T.astype(np.float64)
    assert (top >= 0).all() and (top + ch <= h).all() and (left >= 0).all()
    assert (left + cw <= w).all()
    ref = _reference_crop_boxes(np.random.default_rng(0), n, h, w)
    bound = _ks_bound(n, n)
    assert ks_statistic(ch * cw / (h * w), ref[:, 0] * ref[:, 1] / (h * w)) < bound
    assert ks_statistic(np.log(cw / ch), np.log(ref[:, 1] / ref[:, 0])) < bound
