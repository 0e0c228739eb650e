"""Mixup / CutMix on batches (JAX, jitted). Few distinct static configs: each compiles once."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax.data.mixing import (
    cutmix_box,
    mix_batch,
    mixing_groups,
    partner_indices,
    sample_beta,
    sample_mix_params,
    smooth_one_hot,
)
from tests.helpers import ks_statistic

N, H, W, C, K = 6, 16, 12, 3, 10
LS = 0.1
OFF = LS / K


def _batch():
    # example i is the constant image i + 1 with label i: every pixel says where it came from
    values = jnp.arange(1, N + 1, dtype=jnp.float32)[:, None, None, None]
    return jnp.broadcast_to(values, (N, H, W, C)), jnp.arange(N, dtype=jnp.int32)


@functools.cache
def _mixer(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5, num_groups=1):
    return jax.jit(
        functools.partial(
            mix_batch,
            num_classes=K,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            mix_prob=mix_prob,
            switch_prob=switch_prob,
            label_smoothing=LS,
            num_groups=num_groups,
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
    # pixels are cut, not blended (a blend with lam ~ 1 can round to the originals in bfloat16)
    if np.any(img[0] == N) and all(np.isin(img[i], [i + 1, N - i]).all() for i in range(N)):
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


# ----------------------------------------------------------------------------- per shard

G8, M8 = 8, 4  # 8 simulated devices, 4 examples each


def _sharded_batch():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    n = G8 * M8
    values = jnp.arange(1, n + 1, dtype=jnp.float32)[:, None, None, None]
    images = jnp.broadcast_to(values, (n, H, W, C))
    labels = jnp.arange(n, dtype=jnp.int32) % K
    return sharding, jax.device_put(images, sharding), jax.device_put(labels, sharding)


def test_groups_default_to_one_per_device():
    assert jax.device_count() == 8
    assert mixing_groups(32) == 8 and mixing_groups(6) == 2 and mixing_groups(6, 1) == 1
    np.testing.assert_array_equal(partner_indices(8, 2), [3, 2, 1, 0, 7, 6, 5, 4])
    with pytest.raises(ValueError, match="num_groups"):
        mixing_groups(8, 0)


def test_partners_stay_on_their_device_and_each_shard_draws_its_own_lambda():
    sharding, images, labels = _sharded_batch()
    mixer = jax.jit(
        functools.partial(
            mix_batch, num_classes=40, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.0
        ),
        in_shardings=(None, sharding, sharding),
        out_shardings=(sharding, sharding),
    )
    partner = np.asarray(partner_indices(G8 * M8, G8))
    assert np.all(partner // M8 == np.arange(G8 * M8) // M8) and np.all(partner != np.arange(32))
    lams = []
    for seed in range(4):
        out, soft = mixer(jax.random.PRNGKey(seed), images, jnp.arange(32, dtype=jnp.int32))
        out, soft = np.asarray(out)[..., 0], np.asarray(soft)
        for i in range(G8 * M8):
            p = partner[i]
            # labels: mass only on the example's own class and its partner's (same shard)
            assert set(np.flatnonzero(soft[i] > 1e-7)) <= {i, p}
            lam = soft[i, i] if i != p else 1.0
            # pixels: the example's own value, its partner's, or their blend with the same lam
            blend = lam * (i + 1) + (1 - lam) * (p + 1)
            ok = np.isclose(out[i], i + 1) | np.isclose(out[i], p + 1) | np.isclose(out[i], blend)
            assert ok.all(), (seed, i)
        lams.append([soft[g * M8, g * M8] for g in range(G8)])
    assert len({round(float(v), 6) for v in np.ravel(lams)}) > 8  # drawn per shard


def _collectives(hlo: str) -> list[str]:
    ops = ("all-to-all", "collective-permute", "all-gather", "all-reduce", "reduce-scatter")
    return [op for op in ops if op in hlo]


def test_mixing_a_sharded_batch_compiles_without_communication():
    sharding, images, labels = _sharded_batch()

    def compiled(num_groups):
        fn = functools.partial(
            mix_batch,
            num_classes=K,
            mixup_alpha=0.8,
            cutmix_alpha=1.0,
            label_smoothing=LS,
            num_groups=num_groups,
        )
        jitted = jax.jit(fn, in_shardings=(None, sharding, sharding), out_shardings=sharding)
        return jitted.lower(jax.random.PRNGKey(0), images, labels).compile().as_text()

    assert _collectives(compiled(None)) == []
    # the check can fail: flipping the whole global batch moves examples between devices
    assert _collectives(compiled(1)) != []


# ----------------------------------------------------------------------------- distributions




def _ks_bound(n: int, m: int) -> float:
    return 1.95 * np.sqrt((n + m) / (n * m))  # rejects equal distributions with p ~ 0.001


def _reference_mix_params(rng, n, h, w, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5):
    """timm's Mixup._params_per_batch + rand_bbox + the area correction, written from their
    definitions in numpy: (is_cutmix, lam before correction, box area fraction, lam after)."""
    cut = rng.random(n) < switch_prob
    lam0 = np.where(
        cut, rng.beta(cutmix_alpha, cutmix_alpha, n), rng.beta(mixup_alpha, mixup_alpha, n)
    )
    ratio = np.sqrt(1 - lam0)
    cut_h, cut_w = (h * ratio).astype(int), (w * ratio).astype(int)
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    yl, yh = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    xl, xh = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    area = (yh - yl) * (xh - xl) / (h * w)
    return cut, lam0, area, np.where(cut, 1 - area, lam0)


def test_mix_parameters_follow_the_timm_definitions():
    n, h, w = 4000, 224, 224
    draw = jax.jit(
        jax.vmap(
            lambda k: sample_mix_params(
                k, h, w, mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=1.0, switch_prob=0.5
            )
        )
    )
    p = draw(jax.random.split(jax.random.PRNGKey(7), n))
    cut, lam, box = np.asarray(p.cutmix), np.asarray(p.lam), np.asarray(p.box)
    assert np.asarray(p.mixed).all()
    assert abs(cut.mean() - 0.5) < 4 * np.sqrt(0.25 / n)  # switch_prob 0.5
    ref_cut, ref_lam0, ref_area, ref_lam = _reference_mix_params(np.random.default_rng(0), n, h, w)
    bound = _ks_bound(n // 2, n // 2)
    # Mixup: lam ~ Beta(0.8, 0.8)
    assert ks_statistic(lam[~cut], ref_lam0[~ref_cut]) < bound
    # CutMix: the box area follows rand_bbox with lam ~ Beta(1, 1), and lam = 1 - area exactly
    area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2]) / (h * w)
    np.testing.assert_allclose(lam[cut], 1 - area[cut], atol=1e-6)
    assert ks_statistic(area[cut], ref_area[ref_cut]) < bound


@pytest.mark.parametrize("alpha", [0.8, 1.0])
def test_beta_draws_follow_beta_alpha_alpha(alpha):
    """lam ~ Beta(0.8, 0.8) for Mixup, Beta(1, 1) = U(0, 1) for CutMix (whose box then covers
    about 1 - lam of the image before clipping)."""
    n = 4000
    got = np.asarray(jax.jit(sample_beta)(jax.random.PRNGKey(3), jnp.full((n,), alpha), alpha))
    ref = np.random.default_rng(1).beta(alpha, alpha, n)
    assert ks_statistic(got, ref) < _ks_bound(n, n)
    if alpha == 1.0:  # against the exact U(0, 1) CDF too (one-sample bound 1.95 / sqrt(n))
        xs = np.sort(got)
        d = np.max(np.maximum(np.arange(1, n + 1) / n - xs, xs - np.arange(n) / n))
        assert d < 1.95 / np.sqrt(n)
