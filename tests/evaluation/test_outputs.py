"""Checkpoint loading (training run, variables checkpoint, .pth), the reports, and eval.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from afc_jax import checkpoints, models
from afc_jax import evaluation as ev_lib
from afc_jax.checkpoints.torch_writer import write_torch_state_dict
from afc_jax.evaluation import loading, reporting
from tests.evaluation import fakes
from tests.helpers import random_variables

REPO = Path(__file__).resolve().parents[2]
FAMILY = "convnext_baseline_circular"  # compiles fastest; loading does not depend on it
NANO = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16))
N = 20


def config(**eval_overrides):
    from configs import digits

    c = digits.get_config(f"model={FAMILY},image_size=32")
    c.model.depths, c.model.dims = NANO["depths"], NANO["dims"]
    c.eval_batch_size = 16
    c = ev_lib.with_eval_config(c)
    e = c.eval
    e.max_shift, e.fractional_denominators, e.crop_margin = 2, (3,), 1
    e.chunk_size, e.heatmap_examples, e.random_shifts = 4, -1, 1
    e.equivariance_examples = 4
    e.equivariance_integer_shifts = ((0, 1), (2, 3))
    e.equivariance_fractional_shifts = ((0.5, 0.5),)
    e.progress = False
    for k, v in eval_overrides.items():
        e[k] = v
    return c


def same(a, b):
    for x, y in zip(*(sorted(checkpoints_flat(t).items()) for t in (a, b)), strict=True):
        assert x[0] == y[0]
        np.testing.assert_array_equal(np.asarray(x[1]), np.asarray(y[1]), err_msg=x[0])


def checkpoints_flat(tree):
    import jax

    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    model = models.create(FAMILY, num_classes=10, **NANO)
    raw = random_variables(model, seed=1)
    ema = random_variables(model, seed=2)
    pth = root / "official.pth"
    write_torch_state_dict(pth, checkpoints.to_torch_state_dict(ema, model))
    run = root / "run"
    state = {
        "step": np.asarray(7, np.int32),
        "params": raw["params"],
        "ema_params": ema["params"],
        "opt_state": {"mu": raw["params"]},
    }
    manager = ocp.CheckpointManager(
        run / "checkpoints", options=ocp.CheckpointManagerOptions(create=True)
    )
    manager.save(7, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    manager.close()
    saved_model = {
        "name": FAMILY,
        "depths": list(NANO["depths"]),
        "dims": list(NANO["dims"]),
        "dtype": "float32",
        "filter_rule": "strict",
    }
    (run / "config.json").write_text(json.dumps({"model": saved_model}))
    variables_dir = checkpoints.save_variables(
        root / "variables", raw, model_name=FAMILY, model_kwargs=dict(num_classes=10, **NANO)
    )
    return dict(model=model, raw=raw, ema=ema, pth=pth, run=run, variables=variables_dir)


def test_every_checkpoint_kind_loads(saved):
    from configs import digits

    # AFC at 32x32: the run's config.json and the variables metadata win
    c = digits.get_config("image_size=32")
    train_ema = loading.load_checkpoint(str(saved["run"]), c, 10, weights="ema")
    assert train_ema.source == "training" and train_ema.step == 7
    assert train_ema.model.family.name == FAMILY and tuple(train_ema.model.dims) == NANO["dims"]
    assert train_ema.name == "run"
    same(train_ema.variables, saved["ema"])
    step_dir = saved["run"] / "checkpoints" / "7"
    train_raw = loading.load_checkpoint(f"raw={step_dir}", c, 10, weights="raw")
    assert train_raw.name == "raw" and train_raw.weights == "raw"
    same(train_raw.variables, saved["raw"])
    var = loading.load_checkpoint(str(saved["variables"]), c, 10)
    assert var.source == "variables" and var.model.family.name == FAMILY
    same(var.variables, saved["raw"])
    c.model.name = FAMILY  # a .pth needs the config to name the family
    c.model.depths, c.model.dims = NANO["depths"], NANO["dims"]
    pth = loading.load_checkpoint(str(saved["pth"]), c, 10, weights="ema")
    assert pth.source == "torch" and pth.name == "official" and pth.notes  # no model_ema entry
    same(pth.variables, saved["ema"])
    with pytest.raises(loading.CheckpointSpecError, match="not a checkpoint"):
        loading.load_checkpoint(str(saved["run"].parent), c, 10)
    with pytest.raises(ValueError):
        wrong = digits.get_config(f"model={FAMILY},image_size=32")  # default nano dims differ
        loading.load_checkpoint(str(saved["pth"]), wrong, 10)


def test_reports_for_checkpoints_side_by_side(saved, tmp_path, fake_bucket):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, N)
    info, iterator, steps = fakes.fake_source(x, labels)
    out = tmp_path / "out"
    report = ev_lib.run_shift_robustness(
        config(),
        [f"pth={saved['pth']}", str(saved["run"])],
        str(out),
        info=info,
        eval_iterator_fn=iterator,
        eval_steps_fn=steps,
    )
    on_disk = json.loads((out / ev_lib.JSON_FILE).read_text())
    assert list(on_disk["checkpoints"]) == ["pth", "run"]
    # the unshifted accuracy, recomputed here on the host (near-ties may go either way)
    logits = np.asarray(saved["model"].apply(saved["ema"], x))
    top2 = np.sort(logits, axis=-1)[:, -2:]
    ties = int(np.sum(top2[:, 1] - top2[:, 0] < 1e-5))
    correct = int(np.sum(np.argmax(logits, -1) == labels))
    for entry in on_disk["checkpoints"].values():
        assert abs(entry["protocols"]["accuracy"]["correct"] - correct) <= ties
        assert entry["accuracy"] == pytest.approx(
            100.0 * entry["protocols"]["accuracy"]["correct"] / N
        )
        for key in ("integer_grid", "half_pixel_grid", "fractional_grid", "crop_shift"):
            detail = entry["protocols"][key]  # the headline is the certified share of N
            assert detail["count"] == N, key
            assert entry[key] == pytest.approx(100.0 * detail["certified_count"] / N), key
        assert entry["num_examples"] == N
        assert entry["protocols"]["integer_grid"]["count"] == N
        assert entry["protocols"]["feature_equivariance"]["available"]
        assert entry["throughput"]["pairs_per_sec"] > 0
        assert entry["integer_grid"] <= entry["accuracy"]
    # the .pth holds the run's EMA weights: the same figures
    a, b = on_disk["checkpoints"]["pth"], on_disk["checkpoints"]["run"]
    for key in ("accuracy", "integer_grid", "half_pixel_grid", "fractional_grid", "crop_shift"):
        assert a[key] == b[key]
    assert on_disk["settings"]["max_shift"] == 2 and on_disk["dataset"]["num_eval"] == N
    assert report["checkpoints"]["run"]["step"] == 7
    md = (out / ev_lib.MARKDOWN_FILE).read_text()
    assert (
        "| model | test accuracy | integer grid | half-pixel grid | fractional grid | crop shift |"
    ) in md
    assert "| pth |" in md and "| run |" in md
    pngs = ("integer_grid_heatmap.png", "half_pixel_grid_heatmap.png", "feature_equivariance.png")
    for png in pngs:
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png

    # eval.py --workdir gs://...: the same files reach the (fake) bucket, through epath.
    calls, local = fake_bucket
    url = "gs://bucket/evals/digits"
    files = reporting.write_all(json.loads((out / ev_lib.JSON_FILE).read_text()), url)
    names = [ev_lib.JSON_FILE, ev_lib.MARKDOWN_FILE, *pngs]
    written = {c[1] for c in calls if c[0] == "open" and c[2] in ("w", "wb")}
    assert written == {f"{url}/{name}" for name in names}
    assert files["json"] == f"{url}/{ev_lib.JSON_FILE}"
    for name in names[1:]:
        assert open(local(f"{url}/{name}"), "rb").read() == (out / name).read_bytes(), name
    in_bucket = json.loads(open(local(files["json"])).read())
    assert in_bucket.pop("files")["markdown"] == f"{url}/{ev_lib.MARKDOWN_FILE}"
    assert in_bucket == {k: v for k, v in on_disk.items() if k != "files"}


def test_eval_cli(saved, tmp_path):
    """eval.py end to end on the bundled digits (built into a temporary TFDS dir)."""
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        str(REPO / "eval.py"),
        f"--config={REPO / 'configs' / 'digits.py'}",
        f"--checkpoint={saved['variables']}",
        f"--checkpoint=train={saved['run']}",
        f"--workdir={out}",
        "--weights=raw",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.eval.protocols=('accuracy','integer_grid','fractional_grid')",
        "--config.eval.max_shift=2",
        "--config.eval.fractional_denominators=(3,)",
        "--config.eval.max_examples=20",
        "--config.eval.batch_size=8",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        env.pop(name, None)  # eval.py must quiet TensorFlow itself
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Quiet: progress and results, none of TensorFlow's, TFDS's or orbax's INFO lines.
    console = proc.stdout + proc.stderr
    for noise in ("oneDNN", "FeatureConnector", "absl::InitializeLog"):
        assert noise not in console, console[-3000:]
    assert not re.search(r"^I\d{4} ", console, flags=re.M), console[-3000:]
    report = json.loads((out / "shift_robustness.json").read_text())
    rows = report["checkpoints"]
    assert list(rows) == ["variables", "train"]
    assert rows["train"]["weights"] == "raw"
    for row in rows.values():
        assert row["num_examples"] == 20
        assert row["half_pixel_grid"] is None and row["crop_shift"] is None
        assert row["integer_grid"] <= row["accuracy"]
    # both hold the raw weights
    assert rows["variables"]["accuracy"] == rows["train"]["accuracy"]
    # progress (the library's log lines, plain) and the table, printed by eval.py
    assert "shift robustness: variables (" in proc.stdout
    assert "shift robustness: train (" in proc.stdout and "raw weights, step 7" in proc.stdout
    assert "20 examples," in proc.stdout
    assert "integer grid" in proc.stdout and "wrote " in proc.stdout


def _eval_py(*args, tmp_path):
    cmd = [sys.executable, str(REPO / "eval.py"), f"--config={REPO / 'configs' / 'digits.py'}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    cmd += [*args, f"--workdir={tmp_path / 'out'}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_eval_cli_reports_a_bad_checkpoint_in_one_line_with_exit_code_2(tmp_path):
    proc = _eval_py(f"--checkpoint={tmp_path}", tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path} is not a checkpoint eval.py can read"), last


def test_eval_settings_errors_are_config_errors(tmp_path):
    info, iterator, steps = fakes.fake_source(np.zeros((4, 32, 32, 3)), np.zeros(4, int))
    cases = [
        (dict(max_shift=0), "eval.max_shift must be >= 1"),
        (dict(protocols=("integer",)), "unknown protocol 'integer'"),
        (dict(protocols=("half_pixel_grid",), max_shift=1), "half_pixel_grid needs"),
    ]
    for overrides, message in cases:
        with pytest.raises(ev_lib.EvalConfigError, match=message):
            ev_lib.run_shift_robustness(
                config(**overrides),
                [ev_lib.as_classifier(fakes.invariant_model)],
                str(tmp_path / "out"),
                info=info,
                eval_iterator_fn=iterator,
                eval_steps_fn=steps,
            )


def test_a_bad_checkpoint_path_fails_before_any_data_is_read(tmp_path):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was opened")

    with pytest.raises(loading.CheckpointSpecError, match="not a checkpoint"):
        ev_lib.run_shift_robustness(
            config(),
            [str(tmp_path)],
            str(tmp_path / "out"),
            info=no_data,
            eval_iterator_fn=no_data,
            eval_steps_fn=no_data,
        )


def test_terminal_summary_names_the_grids_that_ran():
    def entry(name, invariant, **values):
        empty = {key: None for key, _ in reporting.TABLE_COLUMNS}
        return {"name": name, **empty, **values, "certified_invariant": invariant}

    report = {
        "checkpoints": {
            "afc": entry("afc", True, accuracy=95.0, integer_grid=95.0),
            "base": entry("base", False, accuracy=95.0, integer_grid=90.0, half_pixel_grid=80.5),
        }
    }
    assert reporting.invariance_lines(report) == [
        "afc: test accuracy = integer grid = 95.00% -> certified invariance to the circular "
        "shifts of these grids"
    ]
    rows = reporting.table_text(report).splitlines()
    assert rows[0].startswith("model  test accuracy  integer grid")
    assert rows[2].split() == ["base", "95.00", "90.00", "80.50", "–", "–"]
