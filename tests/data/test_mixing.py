"""Mixup / CutMix on batches (JAX, jitted). Few distinct static configs: each compiles once."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax.data.mixing import cutmix_box, mix_batch, sample_beta, smooth_one_hot

N, H, W, C, K = 6, 16, 12, 3, 10
LS = 0.1
OFF = LS / K


def _batch():
    # example i is the constant image i + 1 with label i: every pixel says where it came from
    values = jnp.arange(1, N + 1, dtype=jnp.float32)[:, None, None, None]
    return jnp.broadcast_to(values, (N, H, W, C)), jnp.arange(N, dtype=jnp.int32)


@functools.cache
def _mixer(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5):
    return jax.jit(
        functools.partial(
            mix_batch,
            num_classes=K,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            mix_prob=mix_prob,
            switch_prob=switch_prob,
            label_smoothing=LS,
        )
    )


def _analyse(out, soft, rtol=1e-5):
    """Checks one mixed batch; returns "cutmix", "mixup" or "none" (lam = 1: nothing moved)."""
    out, soft = np.asarray(out, np.float32), np.asarray(soft)
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)  # label mass conserved
    lam = (soft[0, 0] - OFF) / (1 - LS)  # example 0 is mixed with example N-1
    assert -1e-6 <= lam <= 1 + 1e-6
    for i in range(N // 2):
        p = N - 1 - i
        np.testing.assert_allclose(soft[i, i], lam * (1 - LS) + OFF, atol=1e-6)
        np.testing.assert_allclose(soft[i, p], (1 - lam) * (1 - LS) + OFF, atol=1e-6)
    img = out[..., 0]
    if np.allclose(lam, 1.0):
        np.testing.assert_array_equal(out, _batch()[0])
        return "none"
    if all(np.isin(img[i], [i + 1, N - i]).all() for i in range(N)):  # pixels are cut, not blended
        for i in range(N):
            np.testing.assert_allclose(np.mean(img[i] == N - i), 1 - lam, atol=1e-6)
            if i < N // 2:  # the same box for every example
                np.testing.assert_array_equal(img[i] == N - i, img[N - 1 - i] == i + 1)
        return "cutmix"
    expected = lam * np.arange(1, N + 1) + (1 - lam) * np.arange(N, 0, -1)
    np.testing.assert_allclose(img, np.broadcast_to(expected[:, None, None], img.shape), rtol=rtol)
    return "mixup"


def test_label_smoothing_math():
    y = np.asarray(smooth_one_hot(jnp.array([3, 0]), K, LS))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y[0, 3], 1 - LS + LS / K, rtol=1e-6)
    np.testing.assert_allclose(np.delete(y[0], 3), LS / K, rtol=1e-6)


@pytest.mark.parametrize("kw", [dict(mixup_alpha=0.0, cutmix_alpha=0.0), dict(mix_prob=0.0)])
def test_identity_without_mixing(kw):
    images, labels = _batch()
    out, soft = _mixer(**kw)(jax.random.PRNGKey(0), images, labels)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_allclose(soft, smooth_one_hot(labels, K, LS), rtol=1e-6)


def test_mixup_and_cutmix_batches():
    images, labels = _batch()
    mixer = _mixer()
    kinds = [_analyse(*mixer(jax.random.PRNGKey(s), images, labels)) for s in range(60)]
    assert kinds.count("none") <= 3  # mix_prob 1: only when lam happens to be ~1
    assert 15 <= kinds.count("cutmix") <= 45  # switch_prob 0.5


def test_mix_prob_on_a_sharded_bfloat16_batch():
    images, labels = _batch()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    images = jax.device_put(images.astype(jnp.bfloat16), sharding)
    labels = jax.device_put(labels, sharding)
    mixer = _mixer(mix_prob=0.5)
    kinds = []
    for seed in range(60):
        out, soft = mixer(jax.random.PRNGKey(seed), images, labels)
        assert out.dtype == jnp.bfloat16 and out.shape == images.shape
        assert soft.shape == (N, K) and soft.dtype == jnp.float32
        kinds.append(_analyse(out, soft, rtol=1e-2))
    assert 15 <= kinds.count("none") <= 45


def test_cutmix_box_area():
    box_fn = jax.jit(cutmix_box, static_argnums=(2, 3))
    for seed, lam in enumerate(np.linspace(0.0, 1.0, 21)):
        box, area = box_fn(jax.random.PRNGKey(seed), jnp.float32(lam), H, W)
        y0, y1, x0, x1 = np.asarray(box)
        assert 0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W
        np.testing.assert_allclose(area, (y1 - y0) * (x1 - x0) / (H * W), rtol=1e-6)
        assert area <= 1 - float(lam) + 1e-6  # clipping at the border only shrinks the box


def test_beta_sampler_moments():
    alphas = np.array([0.1, 0.8, 1.0, 5.0], np.float32)
    a = jnp.broadcast_to(jnp.asarray(alphas)[:, None], (4, 2000))
    s = np.asarray(jax.jit(sample_beta)(jax.random.PRNGKey(1), a, a))
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    np.testing.assert_allclose(s.mean(1), 0.5, atol=0.03)
    np.testing.assert_allclose(s.var(1), 1 / (4 * (2 * alphas + 1)), rtol=0.1)
