"""A resampling after a stride-1 conv folds into a strided conv (of the low-passed input for
AFC's ideal filter): the same function, with fewer conv outputs computed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import models
from afc_jax.models import convnext
from afc_jax.ops.platform import targeting
from tests.helpers import random_variables, rel_err
from tests.models.fixtures import NANO

TOL = 1e-5  # float32: the folded program sums the same products in another order


def _strides(model, variables, x) -> list[tuple[int, ...]]:
    """window_strides of every non-depthwise convolution in the traced forward pass."""
    jaxpr = jax.make_jaxpr(model.apply)(variables, x).jaxpr
    return [
        tuple(e.params["window_strides"])
        for e in jaxpr.eqns
        if e.primitive.name == "conv_general_dilated" and e.params["feature_group_count"] == 1
    ]


@pytest.mark.parametrize(
    "name, expected",
    [
        # stem (stride 4) and the three downsampling convs (stride 2)
        ("convnext_baseline_circular", [(4, 4), (2, 2), (2, 2), (2, 2)]),
        # the AFC stem keeps its stride-1 conv (twice: image and low-passed image)
        ("convnext_afc", [(1, 1), (1, 1), (2, 2), (2, 2), (2, 2)]),
        ("convnext_afc_nostem", [(4, 4), (2, 2), (2, 2), (2, 2)]),
    ],
)
def test_folded_equals_unfolded(name, expected, monkeypatch):
    model = models.create(name, **NANO)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    variables = random_variables(model, (64, 64), seed=3)
    assert _strides(model, variables, x) == expected

    def loss(v):
        return jnp.sum(jnp.sin(model.apply(v, x)))

    folded = jax.jit(jax.value_and_grad(loss))(variables)
    monkeypatch.setattr(convnext, "resample_folds_into_conv", lambda *a, **k: False)
    assert all(s == (1, 1) for s in _strides(model, variables, x))
    unfolded = jax.jit(jax.value_and_grad(loss))(variables)
    assert rel_err(folded[0], unfolded[0]) <= TOL
    for a, b in zip(jax.tree_util.tree_leaves(folded[1]), jax.tree_util.tree_leaves(unfolded[1])):
        assert rel_err(a, b) <= 10 * TOL


def test_afc_keeps_the_official_order_on_a_tpu_and_in_the_reference_formulation():
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    model = models.create("convnext_afc", **NANO)
    variables = random_variables(model, (64, 64))
    with targeting("tpu"):
        assert all(s == (1, 1) for s in _strides(model, variables, x))
    ref = models.create("convnext_afc", afc_formulation="reference", **NANO)
    assert all(s == (1, 1) for s in _strides(ref, variables, x))
    # the baseline folds everywhere: it keeps plain samples of the conv
    base = models.create("convnext_baseline_circular", **NANO)
    with targeting("tpu"):
        assert _strides(base, random_variables(base, (64, 64)), x)[0] == (4, 4)
