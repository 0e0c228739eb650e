"""model.remat ("block" / "stage") and model.fine_grid_remat recompute activations: same
parameters, loss and gradients; "auto" recomputes the fine grids only for a TPU."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import models
from afc_jax.ops.platform import targeting
from afc_jax.train.loop import ConfigError, build_model

NANO = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5, drop_path_rate=0.1)


X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)


def _loss(model):
    def loss(p):
        out = model.apply({"params": p}, X, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
        return jnp.sum(out**2)

    return loss


def test_remat_keeps_params_loss_and_gradients():
    x = X
    base = models.create("convnext_afc", fine_grid_remat="off", **NANO)
    params = base.init(jax.random.PRNGKey(0), x[:1])["params"]

    def grads(model):
        return jax.jit(jax.value_and_grad(_loss(model)))(params)

    ref_loss, ref_grads = grads(base)
    options = [dict(remat="block"), dict(remat="stage"), dict(fine_grid_remat="on")]
    for option in options:
        model = models.create("convnext_afc", **option, **NANO)
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x[:1])["params"]
        assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(params)
        loss, g = grads(model)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_remat_is_an_error():
    with pytest.raises(ValueError, match="remat must be one of"):
        models.create("convnext_afc", remat="layer", **NANO).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))
        )


def _count_remat(jaxpr) -> int:
    """Checkpoint (remat) equations in a jaxpr and every jaxpr nested in it."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name in ("remat2", "checkpoint")
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    n += _count_remat(sub)
    return n


def _checkpoints(fine_grid_remat: str, platform) -> int:
    """How many recomputed (checkpoint) regions the nano AFC's gradient program has."""
    model = models.create("convnext_afc", fine_grid_remat=fine_grid_remat, **NANO)
    with targeting(platform):
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0), X[:1])["params"]
        jaxpr = jax.make_jaxpr(jax.grad(_loss(model)))(params)
    return _count_remat(jaxpr.jaxpr)


def test_fine_grid_remat_auto_recomputes_only_for_a_tpu():
    blocks = sum(NANO["depths"])
    v5e = types.SimpleNamespace(platform="tpu", device_kind="TPU v5 lite")
    v5p = types.SimpleNamespace(platform="tpu", device_kind="TPU v5")
    assert _checkpoints("auto", [v5e]) == _checkpoints("on", "cpu") == blocks
    assert _checkpoints("auto", "cpu") == _checkpoints("off", "tpu") == 0
    assert _checkpoints("auto", [v5p]) == 0  # v5p stores the maps


def test_unknown_fine_grid_remat_is_an_error():
    with pytest.raises(ValueError, match="fine-grid remat"):
        models.create("convnext_afc", fine_grid_remat="sometimes", **NANO).init(
            jax.random.PRNGKey(0), X[:1]
        )
    from configs import digits

    config = digits.get_config()
    config.model.fine_grid_remat = "sometimes"
    with pytest.raises(ConfigError, match="model.fine_grid_remat must be one of"):
        build_model(config, 10)
