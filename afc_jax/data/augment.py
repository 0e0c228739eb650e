"""Per-example image augmentations in TensorFlow, driven by stateless RNG seeds.

Every random function takes `seed`, a shape-(2,) int32/int64 tensor (a `tf.random.stateless_*`
seed), and is a pure function of (image, seed): the same seed always gives the same output, so
the input pipeline can derive seeds from (config seed, epoch, example position) and reproduce any
batch after a restart.

Conventions:
- "01" images are float32 (H, W, 3) with pixel values in [0, 1].
- RandAugment works on float32 images holding the integers 0..255 (the uint8 grid the standard
  operations are defined on) and rounds and clips after every operation, like a uint8 pipeline.
- Random erasing runs on normalised images (after mean/std), filling with N(0, 1) noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import tensorflow as tf

# ----------------------------------------------------------------------------- seeds


def split_seed(seed, num: int) -> list[tf.Tensor]:
    """`num` independent child seeds of `seed` (each a shape-(2,) tensor)."""
    children = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [children[i] for i in range(num)]


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


def _randint(seed, maxval_exclusive, shape=()):
    """Uniform integers in [0, maxval_exclusive) for a (possibly tensor) bound >= 1."""
    u = _uniform(seed, shape)
    m = tf.cast(maxval_exclusive, tf.float32)
    return tf.minimum(tf.cast(tf.floor(u * m), tf.int32), tf.cast(maxval_exclusive, tf.int32) - 1)


def _coin(seed, prob) -> tf.Tensor:
    return _uniform(seed) < prob


# ----------------------------------------------------------------------------- resizing


def _round_half_up(x):
    return tf.floor(x + 0.5)


def resize_bicubic(
    image: tf.Tensor, size: Sequence[int] | tf.Tensor, *, uint8_grid: bool = False
) -> tf.Tensor:
    """Bicubic resize of an (H, W, C) float image, antialiased when shrinking (like PIL).

    The kernel is PIL's (cubic a = -0.5, stretched by the scale when shrinking, weights
    renormalised at the borders). With `uint8_grid` (images of integers 0..255) it also rounds
    like PIL's uint8 resize: two separable passes, width first, each rounded half up and
    clipped to 0..255 (the intermediate image is uint8 in PIL); the result then equals
    `PIL.Image.resize(..., BICUBIC)` within one grey level (tests/data/test_augment.py).
    """
    image = tf.cast(image, tf.float32)
    if not uint8_grid:
        return tf.image.resize(image, size, method="bicubic", antialias=True)
    size = tf.cast(size, tf.int32)
    wide = tf.image.resize(
        image, tf.stack([tf.shape(image)[0], size[1]]), method="bicubic", antialias=True
    )
    wide = tf.clip_by_value(_round_half_up(wide), 0.0, 255.0)
    out = tf.image.resize(wide, size, method="bicubic", antialias=True)
    return tf.clip_by_value(_round_half_up(out), 0.0, 255.0)


def resize_if_needed(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Bicubic resize to (height, width); the identity (no resampling) when already that size."""
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    resized = tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: resize_bicubic(tf.cast(image, tf.float32), (height, width)),
    )
    return tf.ensure_shape(resized, (height, width, None))


def _short_side_size(height, width, short: int):
    """(new_h, new_w) with the short side equal to `short` and the long side
    int(short * long / short_side) (truncated, as torchvision's Resize(int))."""
    h = tf.cast(height, tf.int64)
    w = tf.cast(width, tf.int64)
    s = tf.constant(short, tf.int64)
    new_h = tf.where(h <= w, s, (s * h) // w)
    new_w = tf.where(h <= w, (s * w) // h, s)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def resize_short_center_crop(
    image: tf.Tensor, size: int, crop_pct: float = 1.0, *, uint8_grid: bool = False
) -> tf.Tensor:
    """Eval transform (the official one: torchvision Resize(int(size / crop_pct), bicubic),
    CenterCrop(size)): resize the short side to int(size / crop_pct) (bicubic, antialiased;
    `uint8_grid` rounds like PIL, see `resize_bicubic`), then take the centre crop at
    round((new - size) / 2) (half to even, like torchvision).

    The resize is skipped when the image already has that short side (e.g. CIFAR at its native
    size with crop_pct 1, or the digits), so such images pass through exactly.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"eval_crop_pct must be in (0, 1], got {crop_pct}")
    image = tf.cast(image, tf.float32)
    short = int(math.floor(size / crop_pct))
    if short < size:
        raise ValueError(f"image_size / eval_crop_pct = {short} is smaller than {size}")
    shape = tf.shape(image)
    new_h, new_w = _short_side_size(shape[0], shape[1], short)
    same = tf.logical_and(tf.equal(new_h, shape[0]), tf.equal(new_w, shape[1]))
    image = tf.cond(
        same,
        lambda: image,
        lambda: resize_bicubic(image, tf.stack([new_h, new_w]), uint8_grid=uint8_grid),
    )
    top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2.0), tf.int32)
    image = image[top : top + size, left : left + size]
    return tf.ensure_shape(image, (size, size, None))


# ----------------------------------------------------------------------------- decoding

# PIL (the official pipeline) decodes JPEGs with libjpeg's accurate integer IDCT; TensorFlow's
# default is the fast one, which differs by up to ~10 grey levels on most pixels.
JPEG_DCT_METHOD = "INTEGER_ACCURATE"


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded bytes -> uint8 (H, W, 3), JPEGs decoded like PIL (`JPEG_DCT_METHOD`)."""
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method=JPEG_DCT_METHOD),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8),
    )


# ----------------------------------------------------------------------------- random resized crop


def random_resized_crop_box(
    seed,
    height,
    width,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Inception-style crop box (top, left, crop_h, crop_w) as int32 scalars.

    Up to `attempts` candidates: area fraction ~ U(scale), log aspect ~ U(log ratio); the first
    candidate that fits is placed uniformly at random. When none fits, the whole image clamped to
    the ratio range is centre-cropped.
    """
    s_area, s_ratio, s_pos = split_seed(seed, 3)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    area = h * w
    target = area * _uniform(s_area, (attempts,), scale[0], scale[1])
    log_r = _uniform(s_ratio, (attempts,), math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_r)  # width / height
    cw = tf.round(tf.sqrt(target * aspect))
    ch = tf.round(tf.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    any_ok = tf.reduce_any(ok)
    first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)

    # fallback: centre crop of the whole image, clamped to the ratio range
    in_ratio = w / h
    fb_w = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
    fb_w = tf.clip_by_value(fb_w, 1.0, w)
    fb_h = tf.clip_by_value(fb_h, 1.0, h)

    crop_h = tf.cast(tf.where(any_ok, ch[first], fb_h), tf.int32)
    crop_w = tf.cast(tf.where(any_ok, cw[first], fb_w), tf.int32)
    hi, wi = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    sy, sx = split_seed(s_pos, 2)
    top = tf.where(any_ok, _randint(sy, hi - crop_h + 1), (hi - crop_h) // 2)
    left = tf.where(any_ok, _randint(sx, wi - crop_w + 1), (wi - crop_w) // 2)
    return top, left, crop_h, crop_w


def random_resized_crop(
    image: tf.Tensor,
    seed,
    size: int,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    *,
    uint8_grid: bool = False,
) -> tf.Tensor:
    """Random resized crop of a decoded (H, W, C) image to (size, size), bicubic, float32
    (`uint8_grid`: rounded like PIL, see `resize_bicubic`)."""
    shape = tf.shape(image)
    top, left, ch, cw = random_resized_crop_box(seed, shape[0], shape[1], scale, ratio)
    crop = image[top : top + ch, left : left + cw]
    out = resize_bicubic(tf.cast(crop, tf.float32), (size, size), uint8_grid=uint8_grid)
    return tf.ensure_shape(out, (size, size, None))


def decode_random_resized_crop(
    encoded: tf.Tensor, seed, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tf.Tensor:
    """Random resized crop straight from encoded bytes; JPEGs decode only the crop window.

    Returns float32 (size, size, 3) of integers 0..255 (resized and rounded like PIL).
    """

    def from_jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        top, left, ch, cw = random_resized_crop_box(seed, shape[0], shape[1], scale, ratio)
        crop = tf.image.decode_and_crop_jpeg(
            encoded, tf.stack([top, left, ch, cw]), channels=3, dct_method=JPEG_DCT_METHOD
        )
        return tf.cast(crop, tf.float32)

    def from_other():
        img = decode_rgb(encoded)
        shape = tf.shape(img)
        top, left, ch, cw = random_resized_crop_box(seed, shape[0], shape[1], scale, ratio)
        return tf.cast(img[top : top + ch, left : left + cw], tf.float32)

    crop = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
    out = resize_bicubic(crop, (size, size), uint8_grid=True)
    return tf.ensure_shape(out, (size, size, 3))


def random_flip(image: tf.Tensor, seed) -> tf.Tensor:
    """Horizontal flip with probability 1/2."""
    return tf.cond(_coin(seed, 0.5), lambda: tf.reverse(image, axis=[1]), lambda: image)


# ----------------------------------------------------------------------------- RandAugment ops
# Each op maps a float32 (H, W, 3) image of integers 0..255 to the same; `level` is the
# magnitude in [0, 10]; `seed` draws the sign of signed ops; `fill` is the (3,) fill colour.

_MAX_LEVEL = 10.0


def _grey(img):
    """ITU-R 601-2 luma of an RGB image, rounded (PIL's "L" conversion), shape (H, W, 1)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return tf.round(r * 0.299 + g * 0.587 + b * 0.114)[..., None]


def _blend(degenerate, img, factor):
    """degenerate + factor * (img - degenerate), truncated and clipped to 0..255 (PIL's
    Image.blend, which ImageEnhance uses)."""
    return tf.clip_by_value(tf.floor(degenerate + factor * (img - degenerate)), 0.0, 255.0)


def _to_uint8_grid(img):
    return tf.clip_by_value(tf.round(img), 0.0, 255.0)


def _signed(level_scaled, seed):
    return tf.where(_coin(seed, 0.5), -level_scaled, level_scaled)


def _enhance_factor(level, seed):
    # "increasing" enhancement: 1 +- 0.9 * level / 10, in [0.1, 1.9]
    return 1.0 + _signed(level / _MAX_LEVEL * 0.9, seed)


def auto_contrast(img, level, seed, fill):
    del level, seed, fill
    lo = tf.reduce_min(img, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(img, axis=[0, 1], keepdims=True)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    out = tf.clip_by_value(tf.floor((img - lo) * scale), 0.0, 255.0)
    return tf.where(hi > lo, out, img)


def _equalize_channel(ch):
    """PIL-style histogram equalisation of one channel of integers 0..255 (H, W)."""
    values = tf.cast(ch, tf.int32)
    hist = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    hist = tf.cast(hist, tf.int32)
    last_nonzero = tf.gather(hist, tf.reduce_max(values))
    step = (tf.reduce_sum(hist) - last_nonzero) // 255

    def equalized():
        cum = tf.cumsum(hist, exclusive=True)
        lut = tf.minimum((cum + step // 2) // tf.maximum(step, 1), 255)
        return tf.cast(tf.gather(lut, values), tf.float32)

    return tf.cond(step > 0, equalized, lambda: ch)


def equalize(img, level, seed, fill):
    del level, seed, fill
    return tf.stack([_equalize_channel(img[..., c]) for c in range(3)], axis=-1)


def invert(img, level, seed, fill):
    del level, seed, fill
    return 255.0 - img


def posterize(img, level, seed, fill):
    """Keep 4 - int(0.4 level) most significant bits (fewer bits as the level grows)."""
    del seed, fill
    bits = 4 - tf.cast(tf.floor(level / _MAX_LEVEL * 4.0), tf.int32)
    step = tf.cast(tf.bitwise.left_shift(1, 8 - bits), tf.float32)
    return tf.floor(img / step) * step


def solarize(img, level, seed, fill):
    """Invert pixels >= 256 - int(25.6 level) (the threshold falls as the level grows)."""
    del seed, fill
    threshold = 256.0 - tf.floor(level / _MAX_LEVEL * 256.0)
    return tf.where(img >= threshold, 255.0 - img, img)


def solarize_add(img, level, seed, fill):
    """Add int(11 level) to pixels below 128, saturating at 255."""
    del seed, fill
    add = tf.floor(level / _MAX_LEVEL * 110.0)
    return tf.where(img < 128.0, tf.minimum(img + add, 255.0), img)


def color(img, level, seed, fill):
    del fill
    return _blend(tf.broadcast_to(_grey(img), tf.shape(img)), img, _enhance_factor(level, seed))


def contrast(img, level, seed, fill):
    del fill
    mean = tf.floor(tf.reduce_mean(_grey(img)) + 0.5)
    return _blend(tf.fill(tf.shape(img), mean), img, _enhance_factor(level, seed))


def brightness(img, level, seed, fill):
    del fill
    return _blend(tf.zeros_like(img), img, _enhance_factor(level, seed))


def sharpness(img, level, seed, fill):
    """Blend with the 3x3 smoothed image (kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, border kept)."""
    del fill
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(img[None], kernel, strides=[1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.round(smooth)
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(img[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
    degenerate = interior * smooth + (1.0 - interior) * img
    return _blend(degenerate, img, _enhance_factor(level, seed))


def _affine(img, matrix, fill):
    """Applies an output->input affine map [a0, a1, a2, b0, b1, b2] (pixel coordinates, x = column),
    bilinear, filling outside with the colour `fill`."""
    transform = tf.concat([tf.cast(matrix, tf.float32), tf.zeros([2], tf.float32)], axis=0)
    shape = tf.shape(img)[:2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=(img - fill)[None],
        transforms=transform[None],
        output_shape=shape,
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    return _to_uint8_grid(out + fill)


def rotate(img, level, seed, fill):
    """Rotation about the centre by +-3 level degrees."""
    angle = _signed(level / _MAX_LEVEL * 30.0, seed) * (math.pi / 180.0)
    h = tf.cast(tf.shape(img)[0], tf.float32)
    w = tf.cast(tf.shape(img)[1], tf.float32)
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    # input = R(angle) (output - centre) + centre
    matrix = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])
    return _affine(img, matrix, fill)


def shear_x(img, level, seed, fill):
    f = _signed(level / _MAX_LEVEL * 0.3, seed)
    return _affine(img, tf.stack([1.0, f, 0.0, 0.0, 1.0, 0.0]), fill)


def shear_y(img, level, seed, fill):
    f = _signed(level / _MAX_LEVEL * 0.3, seed)
    return _affine(img, tf.stack([1.0, 0.0, 0.0, f, 1.0, 0.0]), fill)


def translate_x(img, level, seed, fill):
    """Translation by +-0.045 level of the width."""
    w = tf.cast(tf.shape(img)[1], tf.float32)
    d = _signed(level / _MAX_LEVEL * 0.45, seed) * w
    return _affine(img, tf.stack([1.0, 0.0, d, 0.0, 1.0, 0.0]), fill)


def translate_y(img, level, seed, fill):
    h = tf.cast(tf.shape(img)[0], tf.float32)
    d = _signed(level / _MAX_LEVEL * 0.45, seed) * h
    return _affine(img, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, d]), fill)


# timm's `rand-...-inc1` operation list (its _RAND_INCREASING_TRANSFORMS, in its order): the
# "Increasing" variants get stronger as the level grows (posterize keeps fewer bits, solarize
# inverts from a lower threshold, enhancements move further from 1 either way); the Rel
# translations move by a fraction of the image size. Cutout is left out (random erasing).
RANDAUGMENT_OPS = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "PosterizeIncreasing": posterize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "ColorIncreasing": color,
    "ContrastIncreasing": contrast,
    "BrightnessIncreasing": brightness,
    "SharpnessIncreasing": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateXRel": translate_x,
    "TranslateYRel": translate_y,
}
RANDAUGMENT_OP_NAMES = tuple(RANDAUGMENT_OPS)


def apply_op(name: str, img, level, seed, fill) -> tf.Tensor:
    """One named RandAugment op (for tests and debugging)."""
    img = tf.cast(img, tf.float32)
    fill = tf.reshape(tf.cast(fill, tf.float32), [3])
    out = RANDAUGMENT_OPS[name](img, tf.cast(level, tf.float32), seed, fill)
    return tf.ensure_shape(_to_uint8_grid(out), img.shape)


def rand_augment_layer_draws(seed, magnitude, magnitude_std, prob):
    """What one RandAugment layer draws (timm's AugmentOp): (op index uniform over the
    RANDAUGMENT_OP_NAMES, level ~ N(magnitude, magnitude_std) clipped to [0, 10] (`mstd`;
    exactly `magnitude` when magnitude_std is 0), apply with probability `prob`, seed of the
    op's own randomness (the sign of signed ops))."""
    s_op, s_mag, s_apply, s_arg = split_seed(seed, 4)
    index = _randint(s_op, len(RANDAUGMENT_OPS))
    level = magnitude + magnitude_std * tf.random.stateless_normal([], seed=s_mag)
    level = tf.clip_by_value(level, 0.0, _MAX_LEVEL)
    return index, level, _coin(s_apply, prob), s_arg


def _rand_augment_layer(img, seed, magnitude, magnitude_std, prob, fill):
    index, level, apply, s_arg = rand_augment_layer_draws(seed, magnitude, magnitude_std, prob)
    branches = [(lambda op=op: op(img, level, s_arg, fill)) for op in RANDAUGMENT_OPS.values()]
    applied = tf.switch_case(index, branches)
    return tf.where(apply, applied, img)


@functools.cache
def _rand_augment_layer_fn():
    """One RandAugment layer as a tf.function, traced once per process and shared by every
    pipeline and layer (tracing 15 branches is what makes building a pipeline slow)."""
    scalar = tf.TensorSpec([], tf.float32)
    return tf.function(
        _rand_augment_layer,
        autograph=False,
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32),
            tf.TensorSpec([2], tf.int64),
            scalar,
            scalar,
            scalar,
            tf.TensorSpec([3], tf.float32),
        ],
    )


def rand_augment(
    img: tf.Tensor,
    seed,
    *,
    num_layers: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    prob: float = 0.5,
    fill: Sequence[float] = (128.0, 128.0, 128.0),
) -> tf.Tensor:
    """RandAugment on an (H, W, 3) float image of integers 0..255.

    timm's `rand-m{magnitude}-n{num_layers}-mstd{magnitude_std}-inc1` (the official recipe:
    rand-m9-mstd0.5-inc1, 2 layers, each op applied with probability 0.5): `num_layers` times,
    pick one of the 15 ops uniformly (with replacement), draw its magnitude from
    N(magnitude, magnitude_std) clipped to [0, 10], and apply it with probability `prob`. `fill`
    is the colour geometric ops leave outside the image (timm: the ImageNet mean, rounded).
    """
    img = tf.cast(img, tf.float32)
    static_shape = img.shape
    layer = _rand_augment_layer_fn()
    args = (
        tf.constant(magnitude, tf.float32),
        tf.constant(max(magnitude_std, 0.0), tf.float32),
        tf.constant(prob, tf.float32),
        tf.reshape(tf.constant(fill, tf.float32), [3]),
    )
    for layer_seed in split_seed(seed, num_layers):
        img = tf.ensure_shape(layer(img, layer_seed, *args), static_shape)
    return img


# ----------------------------------------------------------------------------- colour jitter


def color_jitter(img01: tf.Tensor, seed, strength: float) -> tf.Tensor:
    """Brightness, contrast and saturation jitter (factors ~ U[1-s, 1+s]) in a random order.

    Works on [0, 1] images and clips to [0, 1]; hue is left alone.
    """
    if strength <= 0:
        return img01
    s_order, s_b, s_c, s_s = split_seed(seed, 4)
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    fb = _uniform(s_b, (), lo, hi)
    fc = _uniform(s_c, (), lo, hi)
    fs = _uniform(s_s, (), lo, hi)

    def grey(x):
        return x[..., 0:1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114

    def bright(x):
        return tf.clip_by_value(x * fb, 0.0, 1.0)

    def contr(x):
        m = tf.reduce_mean(grey(x))
        return tf.clip_by_value(m + fc * (x - m), 0.0, 1.0)

    def satur(x):
        g = grey(x)
        return tf.clip_by_value(g + fs * (x - g), 0.0, 1.0)

    order = tf.argsort(_uniform(s_order, (3,)))
    out = img01
    for i in range(3):
        out = tf.switch_case(
            order[i], [lambda x=out: bright(x), lambda x=out: contr(x), lambda x=out: satur(x)]
        )
        out = tf.ensure_shape(out, img01.shape)
    return out


# ----------------------------------------------------------------------------- random erasing


def random_erasing_box(
    seed,
    height,
    width,
    scale: Sequence[float] = (0.02, 1 / 3),
    ratio: Sequence[float] = (0.3, 1 / 0.3),
    attempts: int = 10,
):
    """timm's RandomErasing box (one erase): up to `attempts` candidates with area fraction
    ~ U(scale), log(h / w) ~ U(log ratio), h = round(sqrt(area * aspect)),
    w = round(sqrt(area / aspect)); the first with h < height and w < width is placed uniformly
    (top in 0..height - h). Returns int32 (top, left, h, w) and whether any candidate fitted."""
    s_area, s_ratio, s_pos = split_seed(seed, 3)
    hi, wi = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    h = tf.cast(hi, tf.float32)
    w = tf.cast(wi, tf.float32)
    target = h * w * _uniform(s_area, (attempts,), scale[0], scale[1])
    aspect = tf.exp(_uniform(s_ratio, (attempts,), math.log(ratio[0]), math.log(ratio[1])))
    eh = tf.round(tf.sqrt(target * aspect))  # Python's round: half to even
    ew = tf.round(tf.sqrt(target / aspect))
    ok = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    eh_i = tf.cast(eh[first], tf.int32)
    ew_i = tf.cast(ew[first], tf.int32)
    sy, sx = split_seed(s_pos, 2)
    top = _randint(sy, tf.maximum(hi - eh_i + 1, 1))
    left = _randint(sx, tf.maximum(wi - ew_i + 1, 1))
    return top, left, eh_i, ew_i, tf.reduce_any(ok)


def random_erasing(
    img: tf.Tensor,
    seed,
    prob: float = 0.25,
    scale: Sequence[float] = (0.02, 1 / 3),
    ratio: Sequence[float] = (0.3, 1 / 0.3),
    attempts: int = 10,
) -> tf.Tensor:
    """timm's RandomErasing(prob, mode="pixel", max_count=1): with probability `prob`, replace
    one random rectangle (`random_erasing_box`) of a normalised image by N(0, 1) noise drawn per
    pixel and channel; when no candidate fits, nothing is erased.
    """
    if prob <= 0:
        return img
    s_do, s_box, s_noise = split_seed(seed, 3)
    shape = tf.shape(img)
    hi, wi = shape[0], shape[1]
    top, left, eh_i, ew_i, fits = random_erasing_box(s_box, hi, wi, scale, ratio, attempts)
    do = _coin(s_do, prob) & fits
    rows = tf.range(hi)[:, None]
    cols = tf.range(wi)[None, :]
    inside = (rows >= top) & (rows < top + eh_i) & (cols >= left) & (cols < left + ew_i)
    inside = inside[:, :, None] & do
    noise = tf.random.stateless_normal(shape, seed=s_noise, dtype=img.dtype)
    return tf.where(inside, noise, img)
