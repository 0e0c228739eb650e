"""Workdirs on object stores: a gs:// workdir stays a URL and every file goes through epath.

No bucket is reachable here, so epath's backend is replaced by one that records each call and
keeps the files under the test's tmp_path (the `fake_bucket` fixture of tests/conftest.py).
The assertions are on what the code asked for: a local `open()` or an `os.path.abspath` of
the URL never reaches the fake bucket, and fails.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from afc_jax.evaluation import loading
from afc_jax.train import checkpointing
from afc_jax.train import workdir as workdirs
from afc_jax.train.logging import MetricWriter

URL = "gs://bucket/runs/afc_t"


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
