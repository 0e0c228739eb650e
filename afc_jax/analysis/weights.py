"""Random weights for the microscope when no checkpoint is given."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

RANDOM_INITS = ("fanin", "init")


def random_variables(model, seed: int = 0, scheme: str = "fanin") -> dict:
    """Variables of `model` from its initialisers ("init"), or ("fanin", the default) with
    every conv/linear kernel redrawn as N(0, 1/fan_in) and every gamma (layer scale, stem
    polynomial gain) set to 1, like the official ablation fixtures: at the ConvNeXt init
    (kernels std 0.02, layer scale 1e-6) the nonlinearities act almost linearly and the
    blocks barely change their input, which hides aliasing.
    """
    if scheme not in RANDOM_INITS:
        raise ValueError(f"unknown random init {scheme!r}; choose one of {RANDOM_INITS}")
    x = jnp.zeros((1, 32, 32, model.in_chans), jnp.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), x)
    if scheme == "init":
        return variables
    rng = np.random.default_rng(seed)

    def redraw(path, leaf):
        name = getattr(path[-1], "key", str(path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)
        if name == "gamma":
            return jnp.ones_like(leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(redraw, variables)
