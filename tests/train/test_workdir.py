"""Workdirs on object stores: a gs:// workdir stays a URL and every file goes through epath.

No bucket is reachable here, so epath's backend is replaced by one that records each call and
keeps the files under the test's tmp_path. The assertions are on what the code asked for: a
local `open()` or an `os.path.abspath` of the URL never reaches the fake bucket, and fails.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from etils.epath import gpath
from etils.epath import testing as epath_testing

from afc_jax.evaluation import loading
from afc_jax.train import checkpointing
from afc_jax.train import workdir as workdirs
from afc_jax.train.logging import MetricWriter

URL = "gs://bucket/runs/afc_t"


@pytest.fixture
def fake_bucket(tmp_path, monkeypatch):
    """Records (operation, path, mode) of every epath call; `gs://x` lives in tmp_path/gs/x."""
    monkeypatch.chdir(tmp_path)  # a regression that writes "gs:/..." locally stays in tmp_path
    calls = []

    def local(path):
        path = os.fspath(path)
        assert path.startswith("gs://"), f"a local path reached the gs:// backend: {path}"
        return str(tmp_path / "gs" / path[len("gs://") :])

    def fake(name, fn):
        def call(original, path, *args, **kwargs):
            del original  # the real one would try to reach GCS
            calls.append((name, os.fspath(path), *args))
            return fn(local(path), *args, **kwargs)

        return call

    # With TensorFlow installed epath sends gs:// to tf.io.gfile directly, past the mock.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    with epath_testing.mock_epath(
        open=fake("open", open),
        exists=fake("exists", os.path.exists),
        isdir=fake("isdir", os.path.isdir),
        makedirs=fake("makedirs", lambda p, exist_ok=False: os.makedirs(p, exist_ok=exist_ok)),
        mkdir=fake("mkdir", lambda p, exist_ok=False: os.makedirs(p, exist_ok=exist_ok)),
        listdir=fake("listdir", os.listdir),
    ):
        yield calls, local


def test_resolve_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert workdirs.resolve("gs://bucket/runs/afc_t/") == URL
    assert workdirs.resolve("runs/x") == str(tmp_path / "runs" / "x")
    assert workdirs.is_url(URL) and not workdirs.is_url("/tmp/gs:/x")
    assert checkpointing.checkpoint_dir(URL) == f"{URL}/checkpoints"
    assert checkpointing.corrupt_dir(URL + "/") == f"{URL}/checkpoints_corrupt"
    with pytest.raises(ValueError, match="workdir is empty"):
        workdirs.resolve("")


def test_metrics_on_a_bucket_are_rewritten_whole_and_survive_a_resume(fake_bucket):
    path = f"{URL}/metrics.jsonl"
    writer = MetricWriter(URL, tensorboard=False)
    writer.write(1, {"loss": 2.5})
    writer.write(2, {"loss": float("nan")})
    writer.close()
    resumed = MetricWriter(URL, tensorboard=False)  # a new launch appends after the old rows
    resumed.write(3, {"loss": 1.5})
    resumed.close()

    calls, local = fake_bucket
    opens = [(c[1], c[2]) for c in calls if c[0] == "open"]
    assert opens and all(p == path for p, _ in opens), opens
    assert {mode for _, mode in opens} <= {"r", "w"}  # object stores cannot append
    rows = [json.loads(x) for x in open(local(path)).read().splitlines()]
    assert rows == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": "nan"}, {"step": 3, "loss": 1.5}]


def test_config_and_batch_dumps_go_to_the_bucket(fake_bucket):
    calls, local = fake_bucket
    workdirs.write_text(f"{URL}/config.json", '{"seed": 0}\n')
    workdirs.write_npz(f"{URL}/nonfinite_step3_process0.npz", image=np.ones((2, 4, 4, 3)))
    written = {c[1] for c in calls if c[0] == "open" and c[2] in ("w", "wb")}
    assert written == {f"{URL}/config.json", f"{URL}/nonfinite_step3_process0.npz"}
    assert np.load(local(f"{URL}/nonfinite_step3_process0.npz"))["image"].shape == (2, 4, 4, 3)


def test_eval_recognises_a_training_workdir_on_a_bucket(fake_bucket):
    calls, local = fake_bucket
    os.makedirs(local(f"{URL}/checkpoints/40"))
    kind, details = loading.detect(URL)
    assert kind == "training" and os.fspath(details["workdir"]) == URL
    kind, details = loading.detect(f"{URL}/checkpoints/40")
    assert kind == "training" and details["step"] == 40
    assert os.fspath(details["workdir"]) == URL
    assert any(c[1] == f"{URL}/checkpoints" for c in calls)
