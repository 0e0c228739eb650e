"""model.remat ("block" / "stage") recomputes activations: same parameters, loss and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import models

NANO = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5, drop_path_rate=0.1)


def test_remat_keeps_params_loss_and_gradients():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    base = models.create("convnext_afc", **NANO)
    params = base.init(jax.random.PRNGKey(0), x[:1])["params"]

    def grads(model):
        def loss(p):
            out = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
            return jnp.sum(out**2)

        return jax.jit(jax.value_and_grad(loss))(params)

    ref_loss, ref_grads = grads(base)
    for remat in ("block", "stage"):
        model = models.create("convnext_afc", remat=remat, **NANO)
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
