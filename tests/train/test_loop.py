"""train.py end to end on the bundled digits: outputs, resume, SIGTERM on one process.

SIGKILL at many points, corrupt checkpoints and two-process runs (training, evaluation,
preemption, a dead peer) are in test_faults.py, against the same reference run.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time

import pytest

from afc_jax.train.checkpointing import checkpoint_steps, load_raw_state
from tests.train.helpers import MODEL, assert_bitwise_equal, run, start

# These tests share the session's reference run (tests/train/conftest.py): one xdist worker.
pytestmark = pytest.mark.xdist_group("train_reference")

# `data_dir` and `uninterrupted` (the reference run, trained once per session and shared with
# test_faults.py) are fixtures of tests/train/conftest.py.


def _eval_rows(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "top1" in r]


def test_outputs_metrics_config_and_checkpoints(uninterrupted):
    workdir, out = uninterrupted
    assert "steps/s" in out and "img/s" in out and "ETA" in out
    assert f"checkpoints in {workdir}/checkpoints" in out
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "top1" in r]
    assert train_rows and all({"step", "loss", "lr"} <= set(r) for r in train_rows)
    assert len(eval_rows) == 2 and all("ema_top1" in r for r in eval_rows)
    assert eval_rows[-1]["eval_count"] == 360  # the whole digits test split, once
    assert eval_rows[-1]["top1"] > 50.0  # two epochs of a nano net already learn digits
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == MODEL
    steps = checkpoint_steps(workdir)
    assert steps[-1] == 44 and 8 in steps


def test_running_the_command_again_resumes_and_does_nothing_more(uninterrupted, data_dir):
    workdir, _ = uninterrupted
    out = run(workdir, data_dir)
    assert "resumed from step 44" in out
    assert checkpoint_steps(workdir)[-1] == 44


def test_sigterm_writes_a_checkpoint_and_exits_with_the_preemption_code(
    uninterrupted, tmp_path, data_dir
):
    """One process: SIGTERM once the first checkpoint exists; exit 75 with a checkpoint of the
    step it stopped at; the same command resumes and ends bitwise like the reference."""
    reference, _ = uninterrupted
    workdir = tmp_path / "preempted"
    proc = start(workdir, data_dir)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.proc.poll() is None:
            if (workdir / "checkpoints").exists() and checkpoint_steps(workdir):
                break
            time.sleep(0.2)
        assert proc.proc.poll() is None, "run finished before the notice"
        proc.send_signal(signal.SIGTERM)
        proc.proc.wait(120)
    finally:
        out = proc.finish(timeout=60)
    assert proc.returncode == 75, out[-2000:]
    stopped = re.findall(r"preempted: checkpoint of step (\d+) written to", out)
    assert stopped and "run the same command again to resume" in out, out[-2000:]
    stopped_at = checkpoint_steps(workdir)[-1]
    assert stopped == [str(stopped_at)] and 8 <= stopped_at < 44
    # promptly: at the first step after the notice, and no evaluation finished after it
    signal_step = int(re.findall(r"SIGTERM received after step (\d+)", out)[0])
    assert signal_step <= stopped_at <= signal_step + 1, out[-2000:]
    assert all(r["step"] <= signal_step for r in _eval_rows(workdir))
    out = run(workdir, data_dir)
    assert f"resumed from step {stopped_at}" in out
    assert_bitwise_equal(reference, workdir)


@pytest.mark.parametrize(
    ("fault", "during"),
    [("sigterm_in_step@22", "training"), ("sigterm_in_eval@22", "the evaluation")],
    ids=["before_an_evaluation", "during_an_evaluation"],
)
def test_a_notice_stops_at_once_without_evaluating(
    uninterrupted, tmp_path, data_dir, fault, during
):
    """A SIGTERM at the step of the end-of-epoch evaluation (22), or part-way through that
    evaluation: checkpoint 22 is written (bitwise the reference's), no evaluation is written
    or logged, and the run exits 75. Resumed from the reference's checkpoint 16."""
    reference, _ = uninterrupted
    workdir = tmp_path / "notice"
    shutil.copytree(reference / "checkpoints" / "16", workdir / "checkpoints" / "16")
    out = run(workdir, data_dir, fault=fault, returncode=75, timeout=300)
    assert f"[fault injection] SIGTERM at {fault}" in out, out[-3000:]
    assert "resumed from step 16" in out
    signal_step = 21 if during == "training" else 22  # the last step checked before it
    assert f"SIGTERM received after step {signal_step}): stopping {during} at step 22" in out
    assert "preempted: checkpoint of step 22 written to" in out
    assert checkpoint_steps(workdir) == [16, 22]
    state, _ = load_raw_state(str(workdir), 22)
    assert int(state["step"]) == 22
    assert "eval at step" not in out and _eval_rows(workdir) == []
