"""Flax layers against NumPy formulas and their defining properties (spec §1, §5-§8).

Tolerance: relative error max|Δ| / max|ref| <= 1e-5 in float32 (float32 FFT round-off is
about 3e-7 at these sizes).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afc_jax import layers, ops
from afc_jax.layers.conv import CircularConv, resolve_depthwise_impl
from tests.helpers import reference_mask_1d, rel_err

TOL = 1e-5
KEY = jax.random.PRNGKey(0)


def _rand(shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _randomize(params, seed, scale=0.5):
    """Replaces every leaf by random values (so no parameter sits at a trivial init)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    new = [jnp.asarray(_rand(leaf.shape, seed + i, scale), leaf.dtype) for i, leaf in
           enumerate(leaves)]
    return jax.tree_util.tree_unflatten(tree, new)


def _random_params(module, x, seed, scale=0.5):
    """Random parameters of the right shapes, without running the (slow, eager) initialisers."""
    return _randomize(jax.eval_shape(module.init, KEY, x)["params"], seed, scale)


def ref_lowpass(x, cutoff, rule="strict"):
    """float64 ideal low-pass (spec §2), per axis."""
    x = np.asarray(x, np.float64)
    m = np.outer(
        reference_mask_1d(x.shape[-3], cutoff, rule), reference_mask_1d(x.shape[-2], cutoff, rule)
    )[:, :, None]
    return np.fft.ifft2(np.fft.fft2(x, axes=(-3, -2)) * m, axes=(-3, -2)).real


def ref_conv(x, kernel, bias, padding, groups=1, mode="circular", stride=1):
    """Direct NHWC cross-correlation with circular or zero padding, in float64."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    (pt, pb), (pl, pr) = padding
    n, h, w, cin = x.shape
    if mode == "circular":
        rows = np.arange(-pt, h + pb) % h
        cols = np.arange(-pl, w + pr) % w
        xp = x[:, rows][:, :, cols]
    else:
        xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, cin_g, cout = kernel.shape
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    cout_g = cout // groups
    out = np.zeros((n, ho, wo, cout))
    for g in range(groups):
        xs = xp[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                out[..., g * cout_g:(g + 1) * cout_g] += np.einsum(
                    "nhwc,cd->nhwd", xs[:, i:i + ho, j:j + wo], ks[i, j])
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out[:, ::stride, ::stride]


# ----------------------------------------------------------------------------- convolutions

CONV_CASES = {
    # name: (input shape, features, kernel, padding, groups, mode)
    "stem4x4": ((2, 6, 5, 3), 4, (4, 4), ((1, 2), (1, 2)), 1, "circular"),
    "downsample2x2": ((1, 4, 4, 4), 5, (2, 2), ((0, 1), (0, 1)), 1, "circular"),
    "dw7x7_on_2x2": ((2, 2, 2, 3), 3, (7, 7), ((3, 3), (3, 3)), 3, "circular"),
    "dw7x7_on_5x6": ((1, 5, 6, 2), 2, (7, 7), ((3, 3), (3, 3)), 2, "circular"),
    "grouped": ((1, 5, 4, 4), 6, (3, 3), ((1, 1), (0, 2)), 2, "circular"),
    "dw7x7_zeros": ((1, 5, 6, 2), 2, (7, 7), ((3, 3), (3, 3)), 2, "zeros"),
    "dense3x3_zeros": ((2, 4, 3, 3), 2, (3, 3), ((1, 1), (1, 1)), 1, "zeros"),
}


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_circular_conv_matches_numpy(name):
    shape, features, ksize, padding, groups, mode = CONV_CASES[name]
    conv = layers.CircularConv(features, ksize, padding=padding, feature_group_count=groups,
                               padding_mode=mode)
    x = _rand(shape, 1)
    params = _random_params(conv, x, 2)
    chex.assert_shape(params["kernel"], ksize + (shape[-1] // groups, features))
    got = jax.jit(conv.apply)({"params": params}, jnp.asarray(x))
    want = ref_conv(x, params["kernel"], params["bias"], padding, groups, mode)
    chex.assert_shape(got, want.shape)
    assert rel_err(got, want) <= TOL


def test_circular_conv_zeros_mode_equals_lax_zero_padding():
    conv = layers.CircularConv(2, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=2,
                               padding_mode="zeros", use_bias=False)
    x = jnp.asarray(_rand((1, 5, 6, 2), 3))
    params = _random_params(conv, x, 4)
    want = jax.lax.conv_general_dilated(
        x, params["kernel"], (1, 1), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
    assert rel_err(conv.apply({"params": params}, x), want) <= TOL


def test_circular_conv_is_shift_equivariant_and_strided():
    conv = layers.CircularConv(3, (4, 4), padding=((1, 2), (1, 2)))
    x = _rand((1, 6, 6, 2), 5)
    params = _random_params(conv, x, 6)
    y = np.asarray(conv.apply({"params": params}, jnp.asarray(x)))
    y_rolled = conv.apply({"params": params}, jnp.asarray(np.roll(x, (2, -1), axis=(1, 2))))
    assert rel_err(y_rolled, np.roll(y, (2, -1), axis=(1, 2))) <= TOL
    strided = layers.CircularConv(3, (4, 4), padding=((1, 2), (1, 2)), strides=(2, 2))
    assert rel_err(strided.apply({"params": params}, jnp.asarray(x)), y[:, ::2, ::2]) <= TOL


def test_circular_conv_errors():
    with pytest.raises(ValueError):
        jax.eval_shape(layers.CircularConv(4, (3, 3), feature_group_count=2).init, KEY,
                       jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError):
        jax.eval_shape(layers.CircularConv(2, (3, 3), padding_mode="reflect").init, KEY,
                       jnp.zeros((1, 4, 4, 2)))


# ----------------------------------------------------------------------------- norms


def ref_layer_norm(x, scale, bias, kind, eps=1e-6):
    x = np.asarray(x, np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    axes = -1 if kind == "C" else (-3, -2, -1)
    var = np.mean(centred**2, axis=axes, keepdims=True)
    return centred / np.sqrt(var + eps) * np.asarray(scale) + np.asarray(bias)


@pytest.mark.parametrize("kind", ["C", "CHW2"])
@pytest.mark.parametrize("shape", [(2, 5, 6, 4), (2, 3, 4, 3, 3), (1, 1, 1, 5)])
def test_layer_norm_matches_formula(kind, shape):
    norm = layers.LayerNorm(kind)
    x = _rand(shape, 7, scale=3.0) + 2.0
    params = _random_params(norm, x, 8)
    got = jax.jit(norm.apply)({"params": params}, jnp.asarray(x))
    chex.assert_type(got, jnp.float32)
    assert rel_err(got, ref_layer_norm(x, params["scale"], params["bias"], kind)) <= TOL


def test_layer_norm_init():
    params = layers.LayerNorm("CHW2").init(KEY, jnp.zeros((1, 2, 2, 5)))["params"]
    chex.assert_trees_all_close(params, {"scale": jnp.ones(5), "bias": jnp.zeros(5)})


def test_layer_norm_kinds_differ():
    x = jnp.asarray(_rand((1, 4, 4, 3), 9) * np.linspace(0.1, 3, 16).reshape(1, 4, 4, 1))
    c = layers.LayerNorm("C").apply({"params": {"scale": jnp.ones(3), "bias": jnp.zeros(3)}}, x)
    chw = layers.LayerNorm("CHW2").apply({"params": {"scale": jnp.ones(3), "bias": jnp.zeros(3)}},
                                         x)
    assert rel_err(c, chw) > 1e-2


@pytest.mark.parametrize("kind", ["C", "CHW2"])
def test_layer_norm_bfloat16_output_float32_statistics(kind):
    # Values 256 and 258 are exact in bfloat16, their mean 257 is not: bfloat16 statistics
    # would give a wrong centring, float32 ones give exactly +-1.
    pattern = np.array([0.0, 2.0, 0.0, 2.0], np.float32)
    x = np.broadcast_to(256.0 + pattern, (2, 3, 3, 4)).copy()
    x[1] += 2.0 * np.arange(4, dtype=np.float32) % 4
    xb = jnp.asarray(x, jnp.bfloat16)
    params = {"scale": jnp.linspace(0.5, 2.0, 4), "bias": jnp.linspace(-1.0, 1.0, 4)}
    want = ref_layer_norm(np.asarray(xb.astype(jnp.float32)), params["scale"], params["bias"],
                          kind)
    for module in (layers.LayerNorm(kind, dtype=jnp.bfloat16),
                   layers.LayerNorm(kind, param_dtype=jnp.bfloat16)):
        p = jax.tree_util.tree_map(lambda a, m=module: a.astype(m.param_dtype), params)
        got = module.apply({"params": p}, xb)
        chex.assert_type(got, jnp.bfloat16)
        got32 = np.asarray(got.astype(jnp.float32))
        assert np.all(np.abs(got32 - want) <= 2.0**-7 * np.abs(want) + 2e-2), kind
    # Flax promotion: bfloat16 input with float32 params and no dtype computes in float32.
    got = layers.LayerNorm(kind).apply({"params": params}, xb)
    chex.assert_type(got, jnp.float32)
    assert rel_err(got, want) <= TOL


def test_layer_norm_rejects_unknown_kind_and_flat_chw2():
    with pytest.raises(ValueError):
        layers.LayerNorm("BN").init(KEY, jnp.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError):
        layers.LayerNorm("CHW2").init(KEY, jnp.zeros((2, 3)))


# ----------------------------------------------------------------------------- activations


def _poly_params(c, seed):
    rng = np.random.default_rng(seed)
    return {"coef": jnp.asarray(rng.standard_normal((c, 3)), jnp.float32),
            "in_scale": jnp.asarray([1.7], jnp.float32),
            "out_scale": jnp.asarray([0.6], jnp.float32)}


def test_polynomial_activation_init():
    params = layers.PolynomialActivation().init(KEY, jnp.zeros((1, 2, 2, 5)))["params"]
    np.testing.assert_allclose(params["coef"], np.tile(layers.DEFAULT_POLY_COEFFS, (5, 1)))
    np.testing.assert_array_equal(params["in_scale"], [7.0])
    np.testing.assert_array_equal(params["out_scale"], [7.0])
    fixed = layers.PolynomialActivation(train_scales=False).init(KEY, jnp.zeros((1, 2, 2, 5)))
    assert set(fixed["params"]) == {"coef"}


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([(2, 5, 6, 4), (3, 2), (1, 3, 3, 1)]), st.integers(0, 2**16))
def test_polynomial_activation_formula(shape, seed):
    x = _rand(shape, seed, scale=0.3)
    params = _poly_params(shape[-1], seed)
    got = layers.PolynomialActivation().apply({"params": params}, jnp.asarray(x))
    c = np.asarray(params["coef"], np.float64)
    xs = 1.7 * x.astype(np.float64)
    want = 0.6 * (c[:, 0] + c[:, 1] * xs + c[:, 2] * xs**2)
    assert rel_err(got, want) <= TOL


@pytest.mark.parametrize("rule", ["strict", "official"])
@pytest.mark.parametrize("shape", [(2, 12, 12, 3), (1, 7, 10, 2)])
def test_lowpass_polynomial_activation_formula(rule, shape):
    x = _rand(shape, 10, scale=0.3)
    params = _poly_params(shape[-1], 11)
    module = layers.LowpassPolynomialActivation(cutoff=0.75, filter_rule=rule)
    got = module.apply({"params": params}, jnp.asarray(x))
    c = np.asarray(params["coef"], np.float64)
    xs = 1.7 * x.astype(np.float64)
    want = 0.6 * (c[:, 0] + c[:, 1] * xs + c[:, 2] * xs * ref_lowpass(xs, 0.75, rule))
    assert rel_err(got, want) <= TOL


def test_stem_polynomial_residual_is_identity_at_init():
    module = layers.StemPolynomialResidual()
    x = jnp.asarray(_rand((2, 8, 8, 3), 12))
    variables = module.init(KEY, x)
    params = variables["params"]
    assert set(params) == {"gamma", "act"}
    assert set(params["act"]) == {"coef", "in_scale", "out_scale"}
    np.testing.assert_array_equal(params["gamma"], [0.0])
    np.testing.assert_array_equal(np.asarray(module.apply(variables, x)), np.asarray(x))
    # With gamma != 0 it is x + gamma * act(x).
    params = {"gamma": jnp.asarray([0.3]), "act": _poly_params(3, 13)}
    act = layers.LowpassPolynomialActivation().apply({"params": params["act"]}, x)
    assert rel_err(module.apply({"params": params}, x), x + 0.3 * act) <= TOL


def test_gelu_is_exact_erf():
    x = np.linspace(-4, 4, 101)
    want = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    np.testing.assert_allclose(np.asarray(layers.gelu_exact(jnp.asarray(x, jnp.float32))), want,
                               atol=1e-6)


# ----------------------------------------------------------------------------- MLPs


def _mlp_params(module, x, seed, w1_scale):
    """Random weights like the official fixtures: pwconv1 ~ N(0,1) * w1_scale / sqrt(C),
    pwconv2 ~ N(0,1) * 0.2 / sqrt(4C), biases ~ N(0, 0.1)."""
    params = jax.eval_shape(module.init, KEY, x)["params"]
    c = x.shape[-1]
    rng = np.random.default_rng(seed)
    out = {}
    if "act" in params:  # the official initial polynomial
        out["act"] = {"coef": jnp.tile(jnp.asarray(layers.DEFAULT_POLY_COEFFS), (4 * c, 1)),
                      "in_scale": jnp.asarray([7.0]), "out_scale": jnp.asarray([7.0])}
    out["pwconv1"] = {"kernel": jnp.asarray(rng.standard_normal((c, 4 * c)) * w1_scale
                                            / math.sqrt(c), jnp.float32),
                      "bias": jnp.asarray(rng.normal(0, 0.1, 4 * c), jnp.float32)}
    out["pwconv2"] = {"kernel": jnp.asarray(rng.standard_normal((4 * c, c)) * 0.2
                                            / math.sqrt(4 * c), jnp.float32),
                      "bias": jnp.asarray(rng.normal(0, 0.1, c), jnp.float32)}
    return out


def _band_limited(shape, seed):
    return ops.ideal_lowpass(jnp.asarray(_rand(shape, seed)), 1.0, rule="strict")


_shift = jax.jit(lambda x, dy, dx: ops.fractional_shift(x, (dy, dx)))


def _equivariance_errors(module, params, x):
    """rel_err(f(shift(x, d)), shift(f(x), d)) for integer and half-pixel shifts d."""
    apply = jax.jit(lambda v: module.apply({"params": params}, v))
    y = apply(x)
    errs = {}
    for d in [(1, -2), (0.5, 0.0), (0.0, -0.5), (0.5, 0.5), (-1.5, 2.5)]:
        dy, dx = jnp.float32(d[0]), jnp.float32(d[1])
        errs[d] = rel_err(apply(_shift(x, dy, dx)), _shift(y, dy, dx))
    return errs


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 6, 2)])
def test_alias_free_mlp_is_shift_equivariant(shape):
    module = layers.AliasFreeMLP()
    x = _band_limited(shape, 14)
    params = _mlp_params(module, x, 15, w1_scale=1 / 7)
    assert set(params) == {"pwconv1", "act", "pwconv2"}
    chex.assert_shape(module.apply({"params": params}, x), shape)
    errs = _equivariance_errors(module, params, x)
    assert max(errs.values()) <= TOL, errs


def test_gelu_mlp_is_not_half_pixel_equivariant():
    """Sanity check that the equivariance test can fail: GELU at 1x aliases."""
    module = layers.GeluMLP()
    x = _band_limited((2, 8, 8, 3), 16)
    params = _mlp_params(module, x, 17, w1_scale=1.0)
    errs = _equivariance_errors(module, params, x)
    assert errs[(1, -2)] <= TOL  # integer shifts commute with any pointwise map
    assert errs[(0.5, 0.0)] > 1e-3, errs


def test_alias_free_mlp_with_official_rule_equals_strict_at_even_sizes():
    x = _band_limited((1, 8, 6, 2), 18)
    params = _mlp_params(layers.AliasFreeMLP(), x, 19, w1_scale=1 / 7)
    a = layers.AliasFreeMLP().apply({"params": params}, x)
    b = layers.AliasFreeMLP(filter_rule="official").apply({"params": params}, x)
    assert rel_err(a, b) <= TOL


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("stride, rule", [(2, "strict"), (4, "official"), (4, "strict")])
def test_ideal_blur_pool_equals_ideal_downsample(stride, rule):
    x = jnp.asarray(_rand((2, 12, 20, 2), 20))
    got = layers.IdealBlurPool(stride, filter_rule=rule).apply({}, x)
    want = ops.ideal_downsample(x, stride, rule=rule)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    custom = layers.IdealBlurPool(2, cutoff=0.75).apply({}, x)
    assert rel_err(custom, ref_lowpass(x, 0.75)[:, ::2, ::2]) <= TOL


@pytest.mark.parametrize("stride", [2, 4])
def test_blur_pool_size_one_is_plain_subsampling(stride):
    x = _rand((2, 9, 8, 3), 21)
    got = layers.BlurPool(stride=stride, filter_size=1).apply({}, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(got), x[:, ::stride, ::stride])


def test_binomial_filter():
    np.testing.assert_array_equal(layers.binomial_filter(1), [[1.0]])
    np.testing.assert_allclose(layers.binomial_filter(3), np.outer([1, 2, 1], [1, 2, 1]) / 16)
    np.testing.assert_allclose(layers.binomial_filter(4), np.outer([1, 3, 3, 1], [1, 3, 3, 1])
                               / 64)


@pytest.mark.parametrize("size, stride", [(3, 2), (4, 2), (3, 1)])
def test_blur_pool_matches_numpy(size, stride):
    x = _rand((2, 7, 8, 3), 22)
    got = layers.BlurPool(stride=stride, filter_size=size).apply({}, jnp.asarray(x))
    kernel = np.tile(layers.binomial_filter(size)[:, :, None, None], (1, 1, 1, 3))
    before = (size - 1) // 2
    pad = ((before, size - 1 - before),) * 2
    want = ref_conv(x, kernel, None, pad, groups=3, stride=stride)
    assert rel_err(got, want) <= TOL


def test_aps_pool_sows_polyphase_index():
    x = jnp.asarray(_rand((3, 6, 7, 2), 23))
    y, state = layers.APSPool().apply({}, x, mutable=["intermediates"])
    want_y, want_index = ops.adaptive_polyphase_sampling(x, 2)
    (index,) = state["intermediates"]["polyphase_index"]
    np.testing.assert_array_equal(np.asarray(index), np.asarray(want_index))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(want_y))
    chex.assert_shape(y, (3, 3, 4, 2))


# ----------------------------------------------------------------------------- regularisation


def test_drop_path_identity_when_deterministic():
    x = jnp.asarray(_rand((4, 3, 3, 2), 24))
    assert layers.DropPath(0.5).apply({}, x) is x
    assert layers.DropPath(0.0).apply({}, x, deterministic=False) is x


def test_drop_path_drops_whole_examples_at_rate():
    rate, n = 0.25, 4000
    x = jnp.ones((n, 2, 3, 2))
    y = np.asarray(layers.DropPath(rate).apply({}, x, deterministic=False,
                                               rngs={"dropout": jax.random.PRNGKey(1)}))
    per_example = y.reshape(n, -1)
    dropped = np.all(per_example == 0, axis=1)
    kept = np.all(per_example == np.float32(1 / (1 - rate)), axis=1)
    assert np.all(dropped | kept)  # whole examples, survivors scaled by 1/(1 - rate)
    # Binomial standard deviation is sqrt(.25 * .75 / 4000) ~ 0.007: allow ~5 sigma.
    assert abs(dropped.mean() - rate) < 0.035
    assert abs(y.mean() - 1.0) < 0.05


def test_drop_path_rejects_rate_one():
    with pytest.raises(ValueError):
        layers.DropPath(1.0).apply({}, jnp.ones((2, 2)), deterministic=False,
                                   rngs={"dropout": KEY})


@pytest.mark.parametrize("init_value", [1e-6, 0.5])
def test_layer_scale(init_value):
    module = layers.LayerScale(init_value)
    x = jnp.asarray(_rand((2, 3, 3, 4), 25))
    params = module.init(KEY, x)["params"]
    np.testing.assert_array_equal(params["gamma"], np.full(4, init_value, np.float32))
    assert rel_err(module.apply({"params": params}, x), np.asarray(x) * init_value) <= TOL


def test_depthwise_impl_choice_by_backend():
    assert resolve_depthwise_impl("auto", "cpu") == "shift_add"
    assert resolve_depthwise_impl("auto", "tpu") == "conv"
    assert resolve_depthwise_impl("auto", "gpu") == "conv"
    assert resolve_depthwise_impl("conv", "cpu") == "conv"
    with pytest.raises(ValueError, match="depthwise_impl must be one of"):
        CircularConv(4, (3, 3), depthwise_impl="fft").init(
            jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 4))
        )


@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_depthwise_impls_are_the_same_function_with_the_same_params(padding_mode):
    """What a TPU/GPU run ("conv") and a CPU run ("shift_add") compute from one checkpoint."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 12, 6))
    layers = {
        impl: CircularConv(
            6,
            (7, 7),
            padding=((3, 3), (3, 3)),
            feature_group_count=6,
            padding_mode=padding_mode,
            depthwise_impl=impl,
        )
        for impl in ("shift_add", "conv")
    }
    params = layers["conv"].init(jax.random.PRNGKey(2), x)
    assert jax.tree_util.tree_structure(
        layers["shift_add"].init(jax.random.PRNGKey(2), x)
    ) == jax.tree_util.tree_structure(params)

    def loss(impl):
        return lambda p, x: jnp.sum(jnp.sin(layers[impl].apply(p, x)))

    # Each really runs its own way: XLA's convolution only in "conv".
    jaxprs = {impl: str(jax.make_jaxpr(layers[impl].apply)(params, x)) for impl in layers}
    assert "conv_general_dilated" in jaxprs["conv"]
    assert "conv_general_dilated" not in jaxprs["shift_add"]
    out = {impl: layers[impl].apply(params, x) for impl in layers}
    assert float(jnp.max(jnp.abs(out["conv"]))) > 0.1
    assert rel_err(out["shift_add"], out["conv"]) < 1e-5
    grads = {impl: jax.grad(loss(impl), argnums=(0, 1))(params, x) for impl in layers}
    for a, b in zip(
        jax.tree_util.tree_leaves(grads["shift_add"]), jax.tree_util.tree_leaves(grads["conv"])
    ):
        assert rel_err(a, b) < 1e-5
