"""`benchmarks.tpu_compile.parts` builds each ConvNeXt-T part at the shape it has inside the
network: chained in network order, every part's output is the next part's input, and the
counts are ConvNeXt-T's. Shapes only (`jax.eval_shape`), no compiler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from afc_jax.models.families import CONVNEXT_AFC, CONVNEXT_BASELINE_CIRCULAR
from benchmarks.tpu_compile import parts

NETWORK_ORDER = ("stem", "block1", "down2", "block2", "down3", "block3", "down4", "block4")


@pytest.mark.parametrize("family", [CONVNEXT_AFC, CONVNEXT_BASELINE_CIRCULAR], ids=lambda f: f.name)
def test_parts_chain_like_the_network(family):
    assert set(NETWORK_ORDER) == set(parts.PARTS)
    shape, blocks = (2, 224, 224, 3), 0
    for name in NETWORK_ORDER:
        module, n, c, input_grad, count = parts.build(name, family)
        assert shape == (2, n, n, c), name
        assert input_grad == (name != "stem")
        x = jax.ShapeDtypeStruct(shape, jnp.bfloat16)
        variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
        shape = jax.eval_shape(module.apply, variables, x).shape
        blocks += count if name.startswith("block") else 0
        assert count == 1 or name.startswith("block")
    assert shape == (2, 7, 7, 768) and blocks == sum(parts.DEPTHS) == 18
