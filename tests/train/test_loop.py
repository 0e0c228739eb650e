"""train.py end to end on the bundled digits: outputs, resume after SIGKILL, two processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import jax
import numpy as np

from afc_jax.train.checkpointing import checkpoint_steps, load_raw_state
from tests.train.helpers import MODEL, command, env, run

# `data_dir` and `uninterrupted` (the reference run, trained once per session and shared with
# test_faults.py) are fixtures of tests/train/conftest.py.


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


def test_sigkill_then_resume_is_bitwise_identical(uninterrupted, tmp_path, data_dir):
    reference, _ = uninterrupted
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        command(workdir, data_dir), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (workdir / "checkpoints").exists() and 16 in checkpoint_steps(workdir):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = checkpoint_steps(workdir)[-1]
    assert 16 <= killed_at < 44
    out = run(workdir, data_dir)
    assert f"resumed from step {killed_at}" in out
    a, step_a = load_raw_state(reference)
    b, step_b = load_raw_state(workdir)
    assert step_a == step_b == 44
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost(tmp_path, data_dir):
    port = free_port()
    workdir = tmp_path / "two_procs"
    procs = [
        subprocess.Popen(
            command(
                workdir,
                data_dir,
                "--config.num_epochs=1",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "2 process(es)" in outs[0]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "top1" in r]
    assert evals and evals[-1]["eval_count"] == 360  # every example once over both hosts
    assert checkpoint_steps(workdir)[-1] == 22


def test_sigterm_writes_a_checkpoint_and_exits_with_the_preemption_code(
    uninterrupted, tmp_path, data_dir
):
    reference, _ = uninterrupted
    workdir = tmp_path / "preempted"
    proc = subprocess.Popen(
        command(workdir, data_dir),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (workdir / "checkpoints").exists() and checkpoint_steps(workdir):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "run finished before the notice"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, out[-2000:]
    assert "run the same command again to resume" in out
    stopped_at = checkpoint_steps(workdir)[-1]
    assert 8 <= stopped_at < 44
    out = run(workdir, data_dir)
    assert f"resumed from step {stopped_at}" in out
    a, _ = load_raw_state(reference)
    b, _ = load_raw_state(workdir)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
