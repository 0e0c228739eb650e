"""Bad input gets a clear error that says what is allowed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from afc_jax import models
from tests.helpers import random_variables

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=3)


@pytest.fixture(scope="module")
def model_and_vars():
    model = models.create("convnext_baseline_circular", **NANO)
    return model, random_variables(model)


def test_wrong_rank(model_and_vars):
    model, v = model_and_vars
    with pytest.raises(ValueError, match=r"NHWC.*rank 3.*images\[None\]"):
        model.apply(v, jnp.zeros((32, 32, 3)))


def test_nchw_input_gets_a_transpose_hint(model_and_vars):
    model, v = model_and_vars
    with pytest.raises(ValueError, match=r"3 input channels.*transpose\(0, 2, 3, 1\)"):
        model.apply(v, jnp.zeros((1, 3, 32, 32)))


def test_wrong_channel_count(model_and_vars):
    model, v = model_and_vars
    with pytest.raises(ValueError, match=r"takes 3 input channels.*\(1, 32, 32, 4\)"):
        model.apply(v, jnp.zeros((1, 32, 32, 4)))


@pytest.mark.parametrize("size", [(100, 96), (32, 48), (16, 16)])
def test_size_not_a_multiple_of_the_total_stride(model_and_vars, size):
    model, v = model_and_vars
    with pytest.raises(ValueError, match=r"multiples of 32.*Resize or crop to e\.g\."):
        model.apply(v, jnp.zeros((1,) + size + (3,)))


def test_integer_images_are_refused(model_and_vars):
    model, v = model_and_vars
    with pytest.raises(ValueError, match="floating point"):
        model.apply(v, jnp.zeros((1, 32, 32, 3), jnp.uint8))


def test_nan_input_in_debug_mode_eager(model_and_vars):
    model, v = model_and_vars
    model = model.clone(debug=True)
    x = np.zeros((2, 32, 32, 3), np.float32)
    x[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/Inf values"):
        model.apply(v, x)  # eager: the check runs before any compute


def test_nan_input_in_debug_mode_under_jit_with_checkify(model_and_vars):
    model, v = model_and_vars
    model = model.clone(debug=True)
    checked = jax.jit(checkify.checkify(lambda v, x: model.apply(v, x)))
    err, _ = checked(v, jnp.full((1, 32, 32, 3), jnp.inf))
    with pytest.raises(checkify.JaxRuntimeError, match="NaN or Inf"):
        err.throw()
    err, _ = checked(v, jnp.zeros((1, 32, 32, 3)))
    err.throw()  # no error on finite input


def test_unknown_model_name_lists_what_is_allowed():
    with pytest.raises(ValueError, match=r"unknown model 'convnext_afc_huge'.*convnext_afc.*_tiny"):
        models.create("convnext_afc_huge")
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        models.create("resnet50")


def test_family_needs_depths_and_dims():
    with pytest.raises(ValueError, match="needs depths= and dims="):
        models.create("convnext_afc", num_classes=10)


def test_sized_name_refuses_depths():
    with pytest.raises(ValueError, match="fixes depths and dims"):
        models.create("convnext_afc_tiny", depths=(1, 1, 1, 1))


def test_wrong_number_of_stages():
    model = models.create("convnext", depths=(1, 1, 1), dims=(8, 8, 8), num_classes=3)
    with pytest.raises(ValueError, match="4 stages"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
