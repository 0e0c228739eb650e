"""Every protocol on hand-built classifiers with known answers (8 simulated devices)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afc_jax import evaluation as ev_lib
from afc_jax.evaluation import protocols as P
from afc_jax.evaluation import reporting
from afc_jax.ops import fractional_shift
from tests.evaluation import fakes

N = 100  # examples: not a multiple of the batch
BATCH = 24  # global batch: a multiple of the 8 devices, does not divide N
SIZE = 32
GRIDS = ["accuracy", "integer_grid", "half_pixel_grid", "fractional_grid"]


def settings(**overrides):
    ev = ev_lib.eval_config()
    ev.max_shift = 6  # official sets: 26 integer, 25 half-pixel, 13 fractional shifts
    ev.chunk_size = 8
    ev.heatmap_examples = -1
    ev.crop_margin = 2
    ev.crop_resize_method = "linear"
    ev.random_shifts = 3
    for k, v in overrides.items():
        ev[k] = v
    return ev


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    predicted = rng.integers(0, fakes.NUM_CLASSES, N)
    # 70 % of the labels agree with what the hand-built models read from channel 2
    labels = np.where(np.arange(N) % 10 < 7, predicted, (predicted + 3) % fakes.NUM_CLASSES)
    return predicted, labels


# One engine for the invariant model: its compiled steps are shared by every test using it.
INVARIANT = ev_lib.Engine(ev_lib.as_classifier(fakes.invariant_model))


def run(model, images, labels, names, ev=None, batch=BATCH, **kw):
    protocols = ev_lib.build_protocols(ev or settings(), SIZE, names)
    if model is fakes.invariant_model:
        kw["engine"] = INVARIANT
    out = ev_lib.evaluate(model, fakes.eval_batches(images, labels, batch), protocols, **kw)
    return out["protocols"]


# ----------------------------------------------------------------------------- shift sets


def _as_set(a):
    return {(float(y), float(x)) for y, x in np.asarray(a, np.float64).round(6)}


@pytest.mark.parametrize("m", [2, 5, 32])
def test_official_shift_sets_are_the_papers_definitions(m):
    """The official evaluation script's sets: integer (0, 0) plus 1 <= dy, dx < m (no shift
    along one axis only); sub-pixel shifts move content towards lower indices; crop windows
    at offsets 1..2m."""
    assert ev_lib.eval_config().shift_sets == "official"  # eval.py's default
    ints = P.integer_grid_shifts(m)
    want = {(0.0, 0.0)} | {(float(y), float(x)) for y in range(1, m) for x in range(1, m)}
    assert _as_set(ints) == want and len(ints) == 1 + (m - 1) ** 2
    half = P.half_pixel_grid_shifts(m)
    want = {(-(y - 0.5), -(x - 0.5)) for y in range(1, m) for x in range(1, m)}
    assert _as_set(half) == _as_set(sorted(want)) and len(half) == (m - 1) ** 2
    frac = P.fractional_grid_shifts((3, 4))
    want = [(-a / u, -b / u) for u in (3, 4) for a in range(1, u) for b in range(1, u)]
    np.testing.assert_allclose(frac, np.asarray(want), rtol=1e-6)
    crop = P.crop_offsets(m)
    want = {(float(y), float(x)) for y in range(1, 2 * m + 1) for x in range(1, 2 * m + 1)}
    assert _as_set(crop) == want and len(crop) == (2 * m) ** 2


def test_all_shift_sets_are_the_full_square_grids():
    ints = P.integer_grid_shifts(32, "all")
    assert ints.shape == (1024, 2) and ints.min() == 0 and ints.max() == 31
    half = P.half_pixel_grid_shifts(32, "all")
    assert half.shape == (31 * 31, 2)
    assert np.allclose(np.unique(half), np.arange(1, 32) - 0.5)
    frac = P.fractional_grid_shifts((3, 4), "all")
    want = [(a / u, b / u) for u in (3, 4) for a in range(1, u) for b in range(1, u)]
    np.testing.assert_allclose(frac, np.asarray(want), rtol=1e-6)
    assert _as_set(P.crop_offsets(2, "all")) == {(y, x) for y in range(5) for x in range(5)}
    with pytest.raises(ValueError, match="shift sets"):
        P.integer_grid_shifts(4, "paper")
    with pytest.raises(ValueError, match="shift_sets"):
        ev_lib.build_protocols(settings(shift_sets="paper"), SIZE)
    from afc_jax.evaluation import settings as settings_module

    assert settings_module.SHIFT_SETS == P.SHIFT_SETS


@pytest.mark.parametrize("sets", ["official", "all"])
def test_each_protocol_records_its_exact_shift_list(sets):
    ev = settings(shift_sets=sets)
    built = {p.name: p for p in ev_lib.build_protocols(ev, SIZE)}
    want = {
        "integer_grid": P.integer_grid_shifts(6, sets),
        "half_pixel_grid": P.half_pixel_grid_shifts(6, sets),
        "fractional_grid": P.fractional_grid_shifts((3, 4), sets),
        "crop_shift": P.crop_offsets(2, sets),
    }
    for name, shifts in want.items():
        np.testing.assert_array_equal(built[name].shifts, shifts)
        assert sets in built[name].description


def test_shifts_are_exact_rolls_and_fourier_shifts():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 12, 3)), jnp.float32)

    @jax.jit
    def everything(x):
        fractional = P.circular_copies(x, jnp.asarray([[3.0, -5.0], [0.5, 1.0 / 3.0]]))
        whole = P.circular_copies(x, jnp.asarray([[1.0, 2.0], [7.0, 0.0]]))
        reference = fractional_shift(x, (0.5, 1.0 / 3.0))
        window = P.crop_window(x, jnp.asarray([2, 3]), (4, 5))
        return fractional, whole, reference, window

    fractional, whole, reference, window = everything(x)
    assert fractional.shape == (2, 2, 8, 12, 3)
    np.testing.assert_array_equal(fractional[:, 0], np.roll(x, (3, -5), axis=(1, 2)))
    np.testing.assert_allclose(fractional[:, 1], reference, atol=1e-6)
    np.testing.assert_array_equal(whole[:, 0], np.roll(x, (1, 2), axis=(1, 2)))
    np.testing.assert_array_equal(whole[:, 1], np.roll(x, 7, axis=1))
    np.testing.assert_array_equal(window, np.asarray(x)[:, 2:6, 3:8])


# ----------------------------------------------------------------------------- known answers


def test_invariant_model_has_equal_certified_accuracy_everywhere(data):
    predicted, labels = data
    out = run(fakes.invariant_model, fakes.impulse_images(predicted), labels, GRIDS)
    assert out["accuracy"]["top1"] == pytest.approx(70.0)
    for name in GRIDS[1:]:
        assert out[name]["certified"] == pytest.approx(70.0), name
        assert out[name]["count"] == N
        acc = np.asarray(out[name]["per_shift_accuracy"], float)
        assert np.allclose(acc[~np.isnan(acc)], 70.0)
        np.testing.assert_array_equal(
            out[name]["shifts"], ev_lib.build_protocols(settings(), SIZE, [name])[0].shifts
        )
    # the official integer grid's heat map leaves out the shifts along one axis only
    acc = np.asarray(out["integer_grid"]["per_shift_accuracy"], float)
    assert acc.shape == (6, 6) and np.isnan(acc[0, 1:]).all() and np.isnan(acc[1:, 0]).all()
    assert out["integer_and_half_pixel_grid"]["certified"] == pytest.approx(70.0)


@pytest.mark.parametrize("all_zero", [True, False])
def test_constant_model_is_certified_exactly_where_it_is_right(all_zero, data):
    _, labels = data
    labels = np.zeros(N, int) if all_zero else np.where(np.arange(N) % 4 == 0, 0, 5)
    images = fakes.impulse_images(np.zeros(N, int))
    out = run(fakes.constant_model, images, labels, GRIDS + ["random_shift"])
    want = 100.0 if all_zero else 25.0
    for name in GRIDS:
        got = out[name]["top1" if name == "accuracy" else "certified"]
        assert got == pytest.approx(want), name
    assert out["random_shift"]["integer"]["consistency"] == 100.0
    assert out["random_shift"]["fractional"]["mean_abs_prob_change"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    "target, caught_by",
    [
        ((3.0, 5.0), "integer_grid"),
        ((-2.5, -4.5), "half_pixel_grid"),
        ((-1 / 3, -2 / 3), "fractional_grid"),
    ],
    ids=["integer", "half_pixel", "fractional"],
)
def test_a_single_bad_shift_is_caught_only_by_grids_that_hold_it(target, caught_by, data):
    predicted, labels = data
    images = fakes.impulse_images(predicted)
    out = run(fakes.fails_at_shift(target), images, labels, GRIDS)
    assert out["accuracy"]["top1"] == pytest.approx(70.0)
    for name in GRIDS[1:]:
        want = 0.0 if name == caught_by else 70.0
        assert out[name]["certified"] == pytest.approx(want), name
    # the heat map has exactly one bad cell, at the target
    acc = np.asarray(out[caught_by]["per_shift_accuracy"], float)
    bad = np.argwhere(acc < 70.0)
    assert len(bad) == 1 and acc[tuple(bad[0])] == 0.0
    if caught_by == "fractional_grid":  # no grid: one entry per shift of the list
        np.testing.assert_allclose(out[caught_by]["shifts"][bad[0][0]], target, atol=1e-6)
    else:
        axes = out[caught_by]["axes"]
        cell = (axes["dy"][bad[0][0]], axes["dx"][bad[0][1]])
        np.testing.assert_allclose(cell, target, atol=1e-6)
    assert out[caught_by]["worst_shift"]["accuracy"] == 0.0
    np.testing.assert_allclose(out[caught_by]["worst_shift"]["shift"], target, atol=1e-6)
    together = out["integer_and_half_pixel_grid"]["certified"]
    assert together == pytest.approx(0.0 if caught_by != "fractional_grid" else 70.0)


def test_failed_examples_stop_costing_compute(data):
    """Every shift fails: batches stop after about two chunks, and compaction changes
    nothing in the answer."""
    predicted, labels = data
    images = fakes.impulse_images(predicted)
    ev = settings(max_shift=8, heatmap_examples=0, chunk_size=4)
    out = run(fakes.fails_when_moved(), images, labels, ["integer_grid"], ev)["integer_grid"]
    assert out["certified"] == 0.0 and out["count"] == N
    batches = -(-N // BATCH)
    assert out["early_stopped_batches"] == batches
    assert out["pairs"] <= batches * BATCH * 3 * 4  # at most three chunks of 4 per batch
    assert out["naive_pairs"] == N * (1 + 7 * 7)

    # one bad shift late in the grid, every example dies there: compaction (batch 32 -> 8)
    # kicks in once only the 3 heat-map examples are left, and the answer is unchanged
    bad = fakes.fails_at_shift((6.0, 1.0))
    plain = settings(max_shift=8, heatmap_examples=0, max_compactions=0)
    fast = settings(max_shift=8, heatmap_examples=3)
    plain = run(bad, images, labels, ["integer_grid"], plain, batch=32)["integer_grid"]
    fast = run(bad, images, labels, ["integer_grid"], fast, batch=32)["integer_grid"]
    for key in ("certified", "count", "certified_count"):
        assert plain[key] == fast[key]
    assert plain["certified"] == 0.0 and plain["compactions"] == 0
    assert fast["compactions"] >= 1 and fast["heatmap_examples"] == 3
    acc = np.asarray(fast["per_shift_accuracy"], float)
    others = np.delete(acc.ravel(), 6 * 8 + 1)
    others = others[~np.isnan(others)]
    assert acc[6, 1] == 0.0 and np.all(others == acc[0, 0]) and acc[0, 0] > 0


def test_compaction_keeps_the_survivors(data):
    """A model that fails one shift for half the classes: after that chunk the batch is
    compacted, and the certified set is exactly the other half."""
    predicted, labels = data
    predicted = np.arange(N) % fakes.NUM_CLASSES
    labels = predicted.copy()
    images = fakes.impulse_images(predicted)
    bad = fakes.fails_at_shift((1.0, 2.0))

    def model(x):
        cls = jnp.round(jnp.mean(x[..., 2], axis=(1, 2)))
        flip = jnp.argmax(bad(x), -1) != cls
        return fakes._one_hot(cls.astype(jnp.int32), flip & (cls < 8))

    ev = settings(max_shift=8, heatmap_examples=0, chunk_size=2, compact_factor=2)
    out = run(model, images, labels, ["integer_grid"], ev, batch=32)["integer_grid"]
    assert out["certified"] == pytest.approx(20.0)  # classes 8 and 9
    assert out["compactions"] >= 1


def test_random_shift_consistency(data):
    predicted, labels = data
    images = fakes.impulse_images(predicted)
    inv = run(fakes.invariant_model, images, labels, ["random_shift"])["random_shift"]
    for kind in ("integer", "fractional"):
        assert inv[kind]["consistency"] == 100.0
        assert inv[kind]["mean_abs_prob_change"] == pytest.approx(0.0, abs=1e-6)
        assert inv[kind]["pairs"] == N * 3
    moved = run(fakes.fails_when_moved(), images, labels, ["random_shift"])["random_shift"]
    assert moved["fractional"]["consistency"] == 0.0
    assert moved["fractional"]["mean_abs_prob_change"] > 0.5
    # integer draws hit (0, 0) with probability 1/36 per pair
    assert moved["integer"]["consistency"] < 15.0


def test_crop_shift_finds_the_one_bad_window(data):
    predicted, labels = data
    images = fakes.ramp_images(predicted)
    names = ["accuracy", "crop_shift"]
    inv = run(fakes.invariant_model, images, labels, names)
    assert inv["crop_shift"]["certified"] == pytest.approx(70.0)
    assert inv["crop_shift"]["num_shifts"] == 16  # offsets 1..4 on each axis
    out = run(fakes.fails_at_crop_offset((1, 3), SIZE, 2), images, labels, names)
    assert out["accuracy"]["top1"] == pytest.approx(70.0)
    assert out["crop_shift"]["certified"] == 0.0
    acc = np.asarray(out["crop_shift"]["per_shift_accuracy"])
    assert acc.shape == (4, 4) and out["crop_shift"]["axes"]["dy"] == [1, 2, 3, 4]
    assert acc[0, 2] == 0.0 and np.sum(acc < 70.0) == 1
    # offset 0 is not in the official set; it is in "all"
    corner = run(fakes.fails_at_crop_offset((0, 0), SIZE, 2), images, labels, names)
    assert corner["crop_shift"]["certified"] == pytest.approx(70.0)
    every = run(
        fakes.fails_at_crop_offset((0, 0), SIZE, 2),
        images,
        labels,
        names,
        settings(shift_sets="all"),
    )
    assert every["crop_shift"]["certified"] == 0.0 and every["crop_shift"]["num_shifts"] == 25
    outside = run(fakes.fails_at_crop_offset((7, 7), SIZE, 2), images, labels, names)
    assert outside["crop_shift"]["certified"] == pytest.approx(70.0)


def test_every_example_counts_once_and_the_limit_holds(data):
    predicted, labels = data
    images = fakes.impulse_images(predicted)
    assert len(jax.devices()) == 8
    names = GRIDS + ["random_shift", "crop_shift"]
    out = run(fakes.invariant_model, images, labels, names, settings(max_shift=2))
    for name in GRIDS[1:] + ["crop_shift"]:
        assert out[name]["count"] == N, name
    assert out["accuracy"]["count"] == N
    assert out["accuracy"]["correct"] == int(np.sum(predicted == labels))
    assert out["random_shift"]["integer"]["pairs"] == N * 3
    limited = run(
        fakes.invariant_model,
        images,
        labels,
        ["accuracy", "integer_grid"],
        settings(max_shift=2),
        max_examples=30,
    )
    assert limited["accuracy"]["count"] == 30 and limited["integer_grid"]["count"] == 30
    assert limited["accuracy"]["correct"] == int(np.sum(predicted[:30] == labels[:30]))


def test_settings_and_protocol_selection():
    ev = settings()
    assert [p.name for p in ev_lib.build_protocols(ev, SIZE)] == list(ev_lib.PROTOCOL_NAMES)
    names = [p.name for p in ev_lib.build_protocols(ev, SIZE, "integer_grid,accuracy")]
    assert names == ["integer_grid", "accuracy"]
    with pytest.raises(ev_lib.EvalConfigError, match="unknown protocol"):
        ev_lib.build_protocols(ev, SIZE, ["integer"])
    with pytest.raises(ev_lib.EvalConfigError, match="weights"):
        ev_lib.build_protocols(settings(weights="best"), SIZE)
    with pytest.raises(ev_lib.EvalConfigError, match="half_pixel_grid needs eval.max_shift >= 2"):
        ev_lib.build_protocols(settings(max_shift=1), SIZE)
    assert [
        p.name for p in ev_lib.build_protocols(settings(max_shift=1), SIZE, ["integer_grid"])
    ] == ["integer_grid"]


def test_a_global_batch_the_devices_cannot_split_is_a_config_error():
    images = fakes.impulse_images(np.zeros(12, int))
    batches = fakes.eval_batches(images, np.zeros(12, int), 12)  # 12 rows on 8 devices
    with pytest.raises(ev_lib.EvalConfigError, match="divisible by the 8 devices"):
        ev_lib.evaluate(None, batches, [ev_lib.Accuracy()], engine=INVARIANT)


def test_integer_and_half_pixel_together_is_counted_per_example():
    """Classes 0-2 fail one integer shift, classes 3-5 one half-pixel shift: each grid alone
    certifies 70 %, both together only classes 6-9 (40 %)."""
    predicted = np.arange(N) % fakes.NUM_CLASSES
    images = fakes.impulse_images(predicted)
    bad_integer = fakes.fails_at_shift((3.0, 5.0))
    bad_half = fakes.fails_at_shift((-2.5, -4.5))

    def model(x):
        cls = jnp.round(jnp.mean(x[..., 2], axis=(1, 2)))
        wrong_i = jnp.argmax(bad_integer(x), -1) != cls
        wrong_h = jnp.argmax(bad_half(x), -1) != cls
        flip = jnp.where(cls < 3, wrong_i, (cls < 6) & wrong_h)
        return fakes._one_hot(cls.astype(jnp.int32), flip)

    out = run(model, images, predicted, GRIDS)
    assert out["integer_grid"]["certified"] == pytest.approx(70.0)
    assert out["half_pixel_grid"]["certified"] == pytest.approx(70.0)
    together = out["integer_and_half_pixel_grid"]
    assert together["certified"] == pytest.approx(40.0) and together["count"] == N
    assert together["num_shifts"] == 26 + 25
    entry = reporting.summarize({"name": "m"}, out, {})
    assert entry["integer_and_half_pixel_grid"] == pytest.approx(40.0)
