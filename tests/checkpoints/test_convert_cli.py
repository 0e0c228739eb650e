"""`python -m afc_jax.checkpoints.convert_torch`: .pth in, orbax checkpoint out."""

from __future__ import annotations

import jax
import numpy as np

from afc_jax import checkpoints, models
from afc_jax.checkpoints import convert_torch
from afc_jax.checkpoints.torch_writer import write_torch_file
from tests.helpers import random_variables

NANO = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=5)


def training_checkpoint(tmp_path):
    model = models.create("convnext_afc", **NANO)
    v = random_variables(model)
    ema = jax.tree_util.tree_map(lambda a: a + 1.0, v)
    path = write_torch_file(
        tmp_path / "train.pth",
        {
            "model": checkpoints.to_torch_state_dict(v, model),
            "model_ema": checkpoints.to_torch_state_dict(ema, model),
            "epoch": 7,
            "args": None,
        },
    )
    return model, v, ema, path


def cli(*args):
    return convert_torch.main([str(a) for a in args])


def test_convert_training_checkpoint_ema(tmp_path, capsys):
    model, _, ema, pth = training_checkpoint(tmp_path)
    out = tmp_path / "out"
    rc = cli(
        "--model",
        "convnext_afc",
        "--depths=1,1,1,1",
        "--dims=8,8,8,8",
        "--input",
        pth,
        "--output",
        out,
        "--which",
        "model_ema",
        "--check_size",
        32,
    )
    assert rc == 0
    assert "5 classes" in capsys.readouterr().out
    restored_model, restored, meta = checkpoints.load_model(out)
    assert meta["extra"]["which"] == "model_ema"
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 32, 32, 3))
    np.testing.assert_allclose(
        jax.jit(restored_model.apply)(restored, x), jax.jit(model.apply)(ema, x), rtol=1e-6
    )


def test_refuses_to_overwrite_and_reports_bad_files(tmp_path, capsys):
    _, _, _, pth = training_checkpoint(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = (
        "--model",
        "convnext_afc",
        "--depths=1,1,1,1",
        "--dims=8,8,8,8",
        "--input",
        pth,
        "--output",
        out,
        "--check_size",
        32,
    )
    assert cli(*args) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    assert cli("--model", "convnext_afc_tiny", "--input", garbage, "--output", tmp_path / "x") == 2
    assert "error:" in capsys.readouterr().err

    assert cli("--model", "convnext_afc_tiny", "--input", pth, "--output", tmp_path / "y") == 2
    assert "does not match" in capsys.readouterr().err


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    assert cli("--model", "convnext_afc", "--input", tmp_path / "a.pth") == 2  # no --output
    assert "--output" in capsys.readouterr().err
    args = ("--model", "convnext_afc", "--input", tmp_path / "a.pth", "--output", tmp_path / "o")
    assert cli(*args, "--depths=1,1,1") == 2
    assert "four integers" in capsys.readouterr().err
