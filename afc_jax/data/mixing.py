"""Mixup and CutMix, in JAX (jittable, works on a global sharded batch), as timm's `Mixup` in
"batch" mode (the official recipe) applied to each device's shard of the batch.

The batch is split into `num_groups` equal contiguous groups, by default one per device (the
rows of the global batch each device holds): the official script mixes each GPU's own batch,
and mixing within a shard needs no communication between devices. Per group: with probability
`mix_prob` the group is mixed, else only the labels are smoothed. When both alphas are
positive, CutMix is chosen with probability `switch_prob`, else Mixup; when only one is
positive, that one is used. The mixing partner of the group's example j is its example m-1-j
(the group reversed, timm's `x.flip(0)`), and lambda ~ Beta(alpha, alpha) is shared by the
group.

- Mixup:  x = lam x_i + (1 - lam) x_partner.
- CutMix: a box with side fractions sqrt(1 - lam), centred uniformly at random and clipped to
  the image, is pasted from the partner; lam is then corrected to 1 - box area / image area.

Labels become smoothed one-hots, (1 - s) onehot + s / num_classes, mixed with the same lam, so
every row sums to 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class MixParams(NamedTuple):
    """What `sample_mix_params` drew for one batch (all scalars)."""

    lam: jax.Array  # weight of the original example, after the CutMix area correction
    mixed: jax.Array  # bool: the batch is mixed at all
    cutmix: jax.Array  # bool: CutMix (True) or Mixup (False), meaningful when `mixed`
    box: jax.Array  # int32 (y0, y1, x0, x1): the CutMix box, rows y0:y1, columns x0:x1


def smooth_one_hot(labels, num_classes: int, label_smoothing: float = 0.0, dtype=jnp.float32):
    """(1 - s) one_hot(labels) + s / num_classes."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def _log_gamma(normals, uniforms, boost, alpha):
    """log of Gamma(alpha, 1) draws from given N(0, 1) and U(0, 1] variates, no loops.

    Marsaglia & Tsang's method for shape a = alpha + 1 >= 1: with d = a - 1/3, c = 1 / sqrt(9 d),
    x ~ N(0, 1), v = (1 + c x)^3 and u ~ U(0, 1), accept d v when v > 0 and
    log u < x^2 / 2 + d - d v + d log v. Each of the leading-axis candidates is accepted with
    probability > 0.95 and the first accepted one is kept (all failing, probability < 1e-20 for
    16 candidates, gives the mean a). Then Gamma(alpha) = Gamma(alpha + 1) U^(1 / alpha), in log
    space so that tiny alphas do not underflow.
    """
    a = alpha + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    t = 1.0 + c * normals
    v = t * t * t
    safe_v = jnp.where(v > 0, v, 1.0)
    accept = (v > 0) & (
        jnp.log(uniforms) < 0.5 * normals * normals + d - d * safe_v + d * jnp.log(safe_v)
    )
    first = jnp.argmax(accept, axis=0)
    chosen = jnp.take_along_axis(safe_v, first[None], axis=0)[0]
    log_g = jnp.where(jnp.any(accept, axis=0), jnp.log(d) + jnp.log(chosen), jnp.log(a))
    return log_g + jnp.log(boost) / alpha


def sample_beta(rng, a, b, *, candidates: int = 16):
    """Beta(a, b) draws (a, b > 0, broadcast together) as X / (X + Y), X ~ Gamma(a),
    Y ~ Gamma(b). Hand-written because `jax.random.beta` samples its gammas by rejection in a
    while loop: vmapped over the per-shard groups of a sharded batch, the loop's stopping test
    becomes an all-reduce across devices on every iteration
    (tests/data/test_mixing.py::test_mixing_a_sharded_batch_compiles_without_communication
    fails with it). Here a fixed number of candidates replaces the loop: no communication."""
    a, b = jnp.broadcast_arrays(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    alpha = jnp.stack([a, b])  # (2, *shape)
    k_norm, k_unif = jax.random.split(rng)
    normals = jax.random.normal(k_norm, (candidates,) + alpha.shape)
    uniforms = jax.random.uniform(
        k_unif, (candidates + 1,) + alpha.shape, minval=jnp.finfo(jnp.float32).tiny
    )
    log_g = _log_gamma(normals, uniforms[:-1], uniforms[-1], alpha)
    return jax.nn.sigmoid(log_g[0] - log_g[1])


def _box_from_uniforms(uy, ux, lam, height: int, width: int):
    cut = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * cut).astype(jnp.int32)
    cut_w = jnp.floor(width * cut).astype(jnp.int32)
    cy = jnp.minimum(jnp.floor(uy * height).astype(jnp.int32), height - 1)
    cx = jnp.minimum(jnp.floor(ux * width).astype(jnp.int32), width - 1)
    y0 = jnp.clip(cy - cut_h // 2, 0, height)
    y1 = jnp.clip(cy + cut_h // 2, 0, height)
    x0 = jnp.clip(cx - cut_w // 2, 0, width)
    x1 = jnp.clip(cx + cut_w // 2, 0, width)
    area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / float(height * width)
    return jnp.stack([y0, y1, x0, x1]), area


def cutmix_box(rng, lam, height: int, width: int):
    """Box (y0, y1, x0, x1) of side fractions sqrt(1 - lam), centred uniformly at random and
    clipped to the image, and the fraction of the image it covers."""
    uy, ux = jax.random.uniform(rng, (2,))
    return _box_from_uniforms(uy, ux, lam, height, width)


def sample_mix_params(
    rng,
    height: int,
    width: int,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float,
    switch_prob: float,
) -> MixParams:
    """Draws the per-batch mixing decision, lambda and CutMix box."""
    use_mixup = mixup_alpha > 0
    use_cutmix = cutmix_alpha > 0
    k_unif, k_beta = jax.random.split(rng)
    no_box = jnp.zeros((4,), jnp.int32)
    if not (use_mixup or use_cutmix) or mix_prob <= 0:
        one = jnp.ones((), jnp.float32)
        return MixParams(one, jnp.zeros((), bool), jnp.zeros((), bool), no_box)
    u = jax.random.uniform(k_unif, (4,))  # mixed?, cutmix?, box centre y, x
    mixed = u[0] < mix_prob
    if use_mixup and use_cutmix:
        cutmix = u[1] < switch_prob
    else:
        cutmix = jnp.asarray(use_cutmix)
    alphas = jnp.array(
        [mixup_alpha if use_mixup else 1.0, cutmix_alpha if use_cutmix else 1.0], jnp.float32
    )
    lam_mixup, lam_cutmix = sample_beta(k_beta, alphas, alphas)
    box, area = _box_from_uniforms(u[2], u[3], lam_cutmix, height, width)
    lam = jnp.where(cutmix, 1.0 - area, lam_mixup)
    lam = jnp.where(mixed, lam, 1.0).astype(jnp.float32)
    box = jnp.where(mixed & cutmix, box, no_box)
    return MixParams(lam, mixed, cutmix, box)


def mixing_groups(batch_size: int, num_groups: int | None = None) -> int:
    """Groups a batch of `batch_size` is mixed in: `num_groups` (default: the number of
    devices, i.e. one group per shard of a batch split over every device), reduced to a divisor
    of the batch size (gcd) so the groups are equal and never straddle two shards."""
    groups = jax.device_count() if num_groups is None else int(num_groups)
    if groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    return math.gcd(int(batch_size), groups)


def partner_indices(batch_size: int, num_groups: int) -> jax.Array:
    """(batch_size,) int32: the example each example is mixed with (within its group)."""
    m = batch_size // num_groups
    i = jnp.arange(batch_size, dtype=jnp.int32)
    return (i // m) * m + (m - 1 - i % m)


def mix_batch(
    rng,
    images,
    labels,
    *,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
    num_groups: int | None = None,
):
    """Mixup/CutMix a batch, group by group (see the module docstring).

    Args:
      rng: a JAX PRNG key (the same on every process for a global batch).
      images: (N, H, W, C) float array (any float dtype; kept).
      labels: (N,) integer class indices.
      num_classes, mixup_alpha, cutmix_alpha, mix_prob, switch_prob, label_smoothing: see the
        module docstring; the float/int arguments must be static Python numbers.
      num_groups: groups mixed independently (`mixing_groups`); default one per device.

    Returns:
      (images, soft_labels): mixed images of the input shape and dtype, and (N, num_classes)
      float32 soft labels whose rows sum to 1.
    """
    if images.ndim != 4:
        raise ValueError(f"mix_batch expects NHWC images, got shape {images.shape}")
    n, h, w, _ = images.shape
    soft = smooth_one_hot(labels, num_classes, label_smoothing)
    if not (mixup_alpha > 0 or cutmix_alpha > 0) or mix_prob <= 0:
        return images, soft
    groups = mixing_groups(n, num_groups)
    params = jax.vmap(
        lambda key: sample_mix_params(
            key,
            h,
            w,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            mix_prob=mix_prob,
            switch_prob=switch_prob,
        )
    )(jax.random.split(rng, groups))
    # (groups, m, ...): a reshape of the batch axis, so a batch split over `groups` devices
    # keeps every group on its device and the flip below is local.
    x = images.reshape((groups, n // groups) + images.shape[1:])
    y = soft.reshape(groups, n // groups, num_classes)
    partner_x = jnp.flip(x, axis=1)
    partner_y = jnp.flip(y, axis=1)
    y0, y1, x0, x1 = (params.box[:, k, None, None] for k in range(4))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    in_box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (groups, H, W)
    cut = jnp.where(in_box[:, None, :, :, None], partner_x, x)
    lam = params.lam[:, None, None, None, None]
    lam_x = lam.astype(images.dtype)
    blend = x * lam_x + partner_x * (1 - lam_x)
    use_cut = (params.mixed & params.cutmix)[:, None, None, None, None]
    use_blend = (params.mixed & ~params.cutmix)[:, None, None, None, None]
    out = jnp.where(use_cut, cut, jnp.where(use_blend, blend, x))
    lam_y = params.lam[:, None, None]
    y = y * lam_y + partner_y * (1.0 - lam_y)
    return out.reshape(images.shape).astype(images.dtype), y.reshape(n, num_classes)
