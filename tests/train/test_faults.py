"""Fault injection: training loses nothing to SIGKILL, SIGTERM, corrupt checkpoints, NaN/Inf,
dead hosts or a change of mesh.

Every end-to-end test compares against the session's uninterrupted reference run (conftest.py):
44 steps of the digits demo. Kill points are drawn from a seeded RNG; the in-process faults
(`AFC_JAX_FAULT`, see afc_jax/train/faults.py) SIGKILL the process at exact places: mid step,
mid checkpoint write (files written, not committed), right after a commit, mid evaluation.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from afc_jax.train import checkpointing, faults
from afc_jax.train.checkpointing import checkpoint_steps
from tests.train import helpers
from tests.train.helpers import run, start

# These tests share the session's reference run (tests/train/conftest.py): one xdist worker.
pytestmark = pytest.mark.xdist_group("train_reference")

KILLED = -signal.SIGKILL


def _tmp_dirs(workdir):
    return sorted(p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name)


def _silent_bit_rot(workdir, step):
    """Flips 4 bytes in the middle of one array data file, chosen so that orbax still reads
    the checkpoint without any error (only the values changed): the corruption that only the
    checksums recorded at save time can catch."""
    before, _ = helpers.leaves(workdir, step)
    step_dir = workdir / "checkpoints" / str(step)
    files = sorted(
        (p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"),
        key=lambda p: -p.stat().st_size,
    )
    for p in files:
        original = p.read_bytes()
        data = bytearray(original)
        mid = len(data) // 2
        data[mid : mid + 4] = bytes(b ^ 0x5A for b in data[mid : mid + 4])
        p.write_bytes(bytes(data))
        try:
            state, _ = checkpointing.load_raw_state(str(workdir), step, verify_checksums=False)
            after = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
            if any(not np.array_equal(x, y) for x, y in zip(before, after)):
                return p  # read back without complaint, with other values
        except Exception:  # noqa: BLE001  (orbax noticed: not silent, try another file)
            pass
        p.write_bytes(original)
    raise AssertionError("no silently corruptible data file found")


def _truncate_and_garble(step_dir):
    """A partial copy: every file cut to half; the array metadata replaced by random bytes."""
    for p in step_dir.rglob("*"):
        if p.is_file():
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (step_dir / "default" / "_METADATA").write_bytes(np.random.default_rng(0).bytes(300))


# ----------------------------------------------------------------------------- 1 + 3: SIGKILL


def test_kill9_anywhere_and_corrupt_checkpoints_then_resume_is_bitwise_identical(
    uninterrupted, tmp_path, data_dir
):
    """Six launches of the same command (asynchronous checkpoints every 4 steps, keep 2):
    SIGKILL mid step before the first checkpoint, mid checkpoint write, right after a commit,
    mid evaluation and from outside at a random log line; between launches the newest
    checkpoint gets silent bit rot once (orbax reads it; only the checksums notice) and is
    truncated/garbled once. The final state is bitwise the reference's."""
    reference, _ = uninterrupted
    workdir = tmp_path / "killed"
    rng = random.Random(6)
    extra = (
        "--config.checkpoint_every_steps=4",
        "--config.checkpoint_keep=2",
        "--config.checkpoint_async=True",
    )

    def killed(fault):
        out = run(workdir, data_dir, *extra, fault=fault, returncode=KILLED, timeout=300)
        assert f"[fault injection] SIGKILL at {fault}" in out, out[-3000:]
        return out

    # 1. mid step, before any checkpoint: the restart is a new run
    first = rng.randint(1, 3)
    killed(f"kill_in_step@{first}")
    assert checkpoint_steps(workdir) == []

    # 2. mid write of checkpoint 8: files written, not renamed; 4 must survive (keep=2)
    out = killed("kill_in_save@8")
    assert "new run" in out
    assert checkpoint_steps(workdir) == [4]
    assert _tmp_dirs(workdir) == ["8.orbax-checkpoint-tmp"]

    # 3. right after checkpoint 12 is committed (before pruning); then bit rot in 12
    out = killed("kill_after_save@12")
    assert "resumed from step 4" in out
    assert checkpoint_steps(workdir) == [4, 8, 12] and _tmp_dirs(workdir) == []
    _silent_bit_rot(workdir, 12)

    # 4. mid evaluation at the end of epoch 1; the corrupt 12 is reported and skipped
    out = killed("kill_in_eval@22")
    corrupt = [x for x in out.splitlines() if "is corrupt" in x]
    assert len(corrupt) == 1 and "checkpoint 12 in" in corrupt[0], out[-3000:]
    assert "integrity check failed" in corrupt[0], corrupt
    assert "resumed from step 8" in out
    # keep=2 plus the newest (pruning waits for the next save); 20 may still be in flight
    steps = checkpoint_steps(workdir)
    assert steps in ([12, 16], [12, 16, 20]), steps

    # 5. SIGKILL from outside at a random log line; then truncate + garble the newest
    line = rng.choice([25, 30, 35])
    proc = start(workdir, data_dir, *extra)
    try:
        out = proc.read_until(f"step {line}/44", timeout=300)
        assert f"step {line}/44" in out, out[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        out = proc.finish(timeout=60)
    assert proc.returncode == KILLED
    assert f"resumed from step {steps[-1]}" in out
    steps = checkpoint_steps(workdir)
    assert len(steps) >= 2 and steps[-1] <= line
    _truncate_and_garble(workdir / "checkpoints" / str(steps[-1]))

    # 6. the same command once more: skips the damaged checkpoint and finishes
    out = run(workdir, data_dir, *extra, timeout=300)
    corrupt = [x for x in out.splitlines() if "is corrupt" in x]
    assert len(corrupt) == 1 and f"checkpoint {steps[-1]} in" in corrupt[0], out[-3000:]
    assert f"resumed from step {steps[-2]}" in out
    assert len(list((workdir / "checkpoints_corrupt").iterdir())) == 2
    helpers.assert_bitwise_equal(reference, workdir)


# ----------------------------------------------------------------------------- 4: NaN / Inf


def test_nonfinite_stop_names_step_and_batch_and_keeps_the_last_good_checkpoint(
    uninterrupted, tmp_path, data_dir
):
    reference, _ = uninterrupted
    workdir = tmp_path / "nan_stop"
    # NaN images at step 16, a checkpoint step: checkpoint 16 must not be written.
    out = run(workdir, data_dir, fault="nan@16", returncode=3, timeout=300)
    assert "non-finite loss or gradient at step 16 (epoch 0, batch 15 of 22" in out, out[-3000:]
    assert "The update was not applied; checkpoint 8" in out and "nonfinite='skip'" in out
    assert checkpoint_steps(workdir) == [8]
    helpers.assert_bitwise_equal(reference, workdir, step=8)
    dump = np.load(workdir / "nonfinite_step16_process0.npz")
    assert int(dump["step"]) == 16 and np.isnan(dump["image"]).all()
    assert dump["label"].shape == (64,) and not dump["example_finite"].any()


def test_nonfinite_skip_counts_and_goes_on(uninterrupted, tmp_path, data_dir):
    reference, _ = uninterrupted
    workdir = tmp_path / "nan_skip"
    out = run(
        workdir,
        data_dir,
        "--config.nonfinite=skip",
        fault="nan@3,kill_after_save@8",  # stop once checkpoint 8 is committed
        returncode=KILLED,
        timeout=300,
    )
    assert "warning: skipped the update of step 3 (epoch 0, batch 2 of 22" in out, out[-3000:]
    assert "non-finite loss in example(s) [0, 1, 2," in out
    assert "step 5/44: loss" in out and "1 non-finite update(s) skipped" in out
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 5 and rows[0]["skipped_updates"] == 1
    assert np.isfinite(rows[0]["loss"])
    state, step = checkpointing.load_raw_state(str(workdir))
    assert step == 8 and int(state["step"]) == 8 and int(state["skipped_nonfinite"]) == 1
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state["params"]))
    ref, _ = checkpointing.load_raw_state(str(reference), 8)
    assert int(ref["skipped_nonfinite"]) == 0
    assert not np.array_equal(state["params"]["head"]["kernel"], ref["params"]["head"]["kernel"])


# ----------------------------------------------------------------------------- 9: meshes


def _abstract_state(config, devices, fsdp, min_size):
    from afc_jax.train import sharding
    from afc_jax.train.loop import build_model
    from afc_jax.train.optimizer import make_optimizer
    from afc_jax.train.state import init_state

    config.mesh.fsdp, config.mesh.fsdp_min_size = fsdp, min_size
    model = build_model(config, 10)
    tx, _ = make_optimizer(config, 22)
    abstract = jax.eval_shape(
        lambda r: init_state(model, tx, r, (32, 32, 3)), jax.random.PRNGKey(0)
    )
    mesh = sharding.make_mesh(config, devices)
    shardings = sharding.state_shardings(abstract, mesh, min_size)
    return checkpointing.abstract_with_shardings(abstract, shardings)


def test_checkpoint_written_on_8_devices_restores_on_1_and_4_and_training_continues(
    uninterrupted, tmp_path, data_dir
):
    """Checkpoint 40 of the reference, FSDP-sharded over 8 devices and saved from there,
    restores bitwise on 1 device and on 4 (another FSDP layout); train.py continues it to 44 on
    1 device bitwise like the reference, and on 4 devices equal up to float reduction order."""
    reference, _ = uninterrupted
    config = helpers.digits_config()
    devices = jax.devices()
    assert len(devices) == 8

    source = tmp_path / "only40"
    shutil.copytree(reference / "checkpoints" / "40", source / "checkpoints" / "40")
    on8 = _abstract_state(config, devices, 8, 1)  # every array a dim of which 8 divides
    state, step = checkpointing.TrainCheckpoints(source, keep=1, async_save=False).restore_latest(
        on8
    )
    assert step == 40
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree_util.tree_leaves(state))
    split = [x for x in jax.tree_util.tree_leaves(state) if not x.sharding.is_fully_replicated]
    assert len(split) > 200  # all but the scalars and the (10,) head biases
    written = tmp_path / "written_on_8"
    saver = checkpointing.TrainCheckpoints(written, keep=1, async_save=False)
    saver.save(40, state)
    saver.close()
    helpers.assert_bitwise_equal(reference, written, step=40)

    for n, fsdp in ((1, 1), (4, 4)):
        target = _abstract_state(config, devices[:n], fsdp, 1024)
        restored, _ = checkpointing.TrainCheckpoints(
            written, keep=1, async_save=False
        ).restore_latest(target)
        for x, y in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
            assert len(x.sharding.device_set) == n
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    on1 = tmp_path / "on1"
    shutil.copytree(written, on1)
    out = run(on1, data_dir, devices=1, timeout=300)
    assert "resumed from step 40" in out and "mesh {'data': 1, 'fsdp': 1}" in out
    helpers.assert_bitwise_equal(reference, on1)

    on4 = tmp_path / "on4"
    shutil.copytree(written, on4)
    out = run(
        on4,
        data_dir,
        "--config.mesh.fsdp=4",
        "--config.mesh.fsdp_min_size=1024",
        devices=4,
        timeout=300,
    )
    assert "resumed from step 40" in out and "mesh {'data': 1, 'fsdp': 4}" in out
    a, _ = helpers.leaves(reference)
    b, step = helpers.leaves(on4)
    assert step == 44
    for x, y in zip(a, b):
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)  # step counters


# ----------------------------------------------------------------------------- 2 + 7: hosts


def _pair(workdir, data_dir, fault=None):
    # One epoch (22 steps) with an evaluation every 2 steps, so the first launch also shows
    # both processes evaluating the whole split together before the notice. Each process is
    # one slice of the mesh (CPU devices have no slice_index): the hybrid (DCN) mesh path.
    return helpers.start_two_processes(
        workdir,
        data_dir,
        "--config.num_epochs=1",
        "--config.eval_every_steps=2",
        "--config.mesh.slices=2",
        "--heartbeat_timeout_s=10",
        fault=fault,
    )


NOTICE_STEP = 4  # process 1 gets SIGTERM right after dispatching step 4 (an evaluation step)


def test_two_processes_agree_on_the_preemption_step_and_survive_a_dead_peer(tmp_path, data_dir):
    """Two processes on 127.0.0.1 train and evaluate (every example once over both); SIGTERM
    to process 1 only, at the step of an evaluation: both stop within a few steps at the same
    step (JAX's preemption sync), finish no evaluation at or after it, checkpoint it and exit
    75. Then, resumed, process 0 (the coordinator) is SIGKILLed: process 1 exits with an error
    instead of hanging (the wait for it is only a generous timeout)."""
    workdir = tmp_path / "two"
    procs = _pair(workdir, data_dir, fault=f"sigterm_in_step@{NOTICE_STEP}:p1")
    try:
        for p in procs:
            p.proc.wait(400)  # a timeout, not a measurement: a hung process fails here
    finally:
        outs = [p.finish(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [75, 75], outs[0][-2000:] + outs[1][-2000:]
    assert f"SIGTERM at sigterm_in_step@{NOTICE_STEP}" in outs[1], outs[1][-2000:]
    assert "2 process(es)" in outs[0] and "mesh {'data': 2, 'fsdp': 1}" in outs[0]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "top1" in r]
    assert evals and evals[0]["step"] == 2 and evals[0]["eval_count"] == 360
    stopped = [re.findall(r"preempted: checkpoint of step (\d+)", o) for o in outs]
    assert stopped[0] and stopped[0] == stopped[1], (stopped, outs[1][-2000:])
    step = int(stopped[0][0])
    print(f"process 1 got SIGTERM after dispatching step {NOTICE_STEP}; both stopped at {step}")
    # prompt: a few steps after the notice (the sync point is the furthest process's next
    # check), with no evaluation finished at the stop step or later
    assert NOTICE_STEP <= step <= NOTICE_STEP + 3, (step, outs[0][-2000:])
    assert checkpoint_steps(workdir)[-1] == step
    assert all(r["step"] < step for r in evals), (evals, step)
    assert f"eval at step {step}" not in outs[0]
    assert "run the same command again to resume" in outs[1]

    procs = _pair(workdir, data_dir)
    try:
        out0 = procs[0].read_until("first step compiled", timeout=400)
        assert f"resumed from step {step}" in out0, out0[-3000:]
        procs[0].send_signal(signal.SIGKILL)
        try:
            procs[1].proc.wait(120)  # generous: the heartbeat timeout is 10 s
        except subprocess.TimeoutExpired:
            pytest.fail("process 1 still runs 120 s after its coordinator was killed (hung)")
    finally:
        out1 = [p.finish(timeout=60) for p in procs][1]
    assert procs[0].returncode == KILLED
    assert procs[1].returncode not in (0, None), out1[-3000:]
    assert (
        "Another process has probably died" in out1
        or "another task died" in out1
        or "heartbeat" in out1.lower()
    ), out1[-3000:]


# ----------------------------------------------------------------------------- 6: bad configs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("batch_size", 60), r"batch_size=60 must be divisible by the 8 devices"),
        (("eval_batch_size", 100), r"eval_batch_size=100 must be divisible by the 8 devices"),
        (("data.image_size", 40), r"image_size=40: the models need a positive multiple of 32"),
        (("mesh.data", 16), r"16 devices, but 8 are available"),
        (("mesh.fsdp", 3), r"mesh.fsdp=3 does not divide the 8 available devices"),
        (("mesh.slices", 3), r"mesh.slices=3 must divide the data axis \(8 = 8 devices"),
        (("model.name", "convnext_nope"), r"model.name: unknown model 'convnext_nope'"),
        (("model.dtype", "float8"), r"model.dtype must be one of"),
        (("nonfinite", "sometimes"), r"nonfinite must be one of \('stop', 'skip'\)"),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else None,
)
def test_bad_configs_fail_before_compilation(override, message, tmp_path, monkeypatch):
    from afc_jax.train.loop import ConfigError, train_and_evaluate

    c = helpers.digits_config()
    c.data.data_dir = "/nonexistent"  # never reached: the config is checked first
    key, value = override
    node = c
    *parents, leaf = key.split(".")
    for name in parents:
        node = node[name]
    node[leaf] = value

    def forbidden(*args, **kwargs):
        raise AssertionError("compiled or traced before the error")

    monkeypatch.setattr(jax, "jit", forbidden)
    monkeypatch.setattr(jax, "eval_shape", forbidden)
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_train_py_reports_a_config_error_in_one_line_with_exit_code_2(tmp_path, data_dir):
    out = run(
        tmp_path / "run", data_dir, "--config.model.name=convnext_nope", returncode=2, timeout=120
    )
    assert "error: model.name: unknown model 'convnext_nope'" in out
    assert "Traceback" not in out and not (tmp_path / "run").exists()
    assert "parameters; mesh" not in out and "first step" not in out  # stopped before building


# ----------------------------------------------------------------------------- unit level


def _small_state(value: float):
    from afc_jax.train.state import TrainState

    w = np.arange(48, dtype=np.float32).reshape(6, 8) + value
    return TrainState(
        step=np.int32(value),
        params={"w": w, "b": np.full(8, value, np.float32)},
        ema_params={"w": w * 0.5, "b": np.zeros(8, np.float32)},
        opt_state=(np.int32(3),),
        skipped_nonfinite=np.int32(0),
    )


def test_failed_save_never_costs_the_last_good_checkpoint(tmp_path, monkeypatch):
    """keep=1 and the save of 16 fails mid-write (disk full): 8 stays, the error says so."""
    ck = checkpointing.TrainCheckpoints(tmp_path, keep=1, async_save=True)
    ck.save(8, _small_state(8))
    ck.close()
    monkeypatch.setenv(faults.ENV, "save_error@16")
    ck = checkpointing.TrainCheckpoints(tmp_path, keep=1, async_save=True)  # hooks installed
    ck.save(16, _small_state(16))  # asynchronous: the failure surfaces on wait
    with pytest.raises(checkpointing.CheckpointSaveError, match="checkpoint 8 is the newest good"):
        ck.wait()
    assert checkpoint_steps(tmp_path) == [8]
    monkeypatch.delenv(faults.ENV)
    ck.save(24, _small_state(24))
    ck.close()
    assert checkpoint_steps(tmp_path) == [24]  # pruned only after 24 was committed


def test_checksums_agree_on_host_and_sharded_devices_and_catch_single_bit_flips():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    x = np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32)
    mesh = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("a", "b"))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("a", "b")))
    tree = {"x": x, "i": np.arange(5, dtype=np.int32), "m": np.array([True, False])}
    sums = checkpointing.checksums(tree)  # on the host
    on_devices = {"x": sharded, "i": tree["i"], "m": tree["m"]}
    assert checkpointing.checksums(on_devices, on_device=True) == sums  # jitted, sharded 4 x 2
    flipped = x.copy()
    flipped.view(np.uint32)[7, 3] ^= 1  # one bit of one float
    with pytest.raises(checkpointing.CheckpointCorruptError, match=r"1 array\(s\) differ.*'x'"):
        checkpointing.verify({**tree, "x": flipped}, sums, "test")
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, other places
    with pytest.raises(checkpointing.CheckpointCorruptError):
        checkpointing.verify({**tree, "x": swapped}, sums, "test")


def test_saving_a_device_state_sums_it_on_the_devices(tmp_path, monkeypatch):
    """The checksums of a sharded device state come from the devices (the host summer is never
    called on the save path) and equal the numpy sums that verify the files when read back."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("a", "b"))
    host = _small_state(8)
    split = NamedSharding(mesh, PartitionSpec(None, "b"))
    state = jax.tree_util.tree_map(
        lambda x: jax.device_put(
            x, split if np.ndim(x) == 2 else NamedSharding(mesh, PartitionSpec())
        ),
        host,
    )

    def no_host_sums(x):
        raise AssertionError("the save path summed an array on the host")

    from afc_jax.checkpoints import training_state  # where checksums are computed

    monkeypatch.setattr(training_state, "_host_leaf_checksum", no_host_sums)
    ck = checkpointing.TrainCheckpoints(tmp_path, keep=1, async_save=True)
    ck.save(8, state)
    ck.close()
    monkeypatch.undo()
    expected = checkpointing.checksums(host)  # numpy
    manager = checkpointing._read_only_manager(str(tmp_path))
    recorded = manager.metadata(8).custom_metadata[checkpointing._META_KEY]
    manager.close()
    assert recorded == expected
    restored, _ = checkpointing.load_raw_state(str(tmp_path))  # verified with numpy sums
    assert checkpointing.checksums(restored) == expected


def test_a_checkpoint_of_another_model_is_a_config_error_and_is_left_alone(tmp_path):
    ck = checkpointing.TrainCheckpoints(tmp_path, keep=2, async_save=False)
    ck.save(8, _small_state(8))
    other = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _small_state(0)
    )
    other = other.replace(params={**other.params, "w": jax.ShapeDtypeStruct((6, 9), np.float32)})
    with pytest.raises(checkpointing.CheckpointMismatchError, match=r"params/w: saved \(6, 8\)"):
        ck.restore_latest(other)
    assert checkpoint_steps(tmp_path) == [8] and not (tmp_path / "checkpoints_corrupt").exists()


def test_when_every_checkpoint_is_corrupt_the_run_stops_and_says_so(tmp_path):
    ck = checkpointing.TrainCheckpoints(tmp_path, keep=2, async_save=False)
    for s in (4, 8):
        ck.save(s, _small_state(s))
    for s in (4, 8):
        (tmp_path / "checkpoints" / str(s) / "default" / "_METADATA").write_text("{garbage")
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _small_state(0)
    )
    with pytest.raises(checkpointing.CheckpointCorruptError, match="every checkpoint"):
        ck.restore_latest(abstract)
    assert checkpoint_steps(tmp_path) == []
    assert len(list((tmp_path / "checkpoints_corrupt").iterdir())) == 2


def test_watchdog_fires_only_without_progress():
    from afc_jax.train.loop import Watchdog

    fired = []
    dog = Watchdog(0.4, on_timeout=lambda idle, what: fired.append((idle, what)), poll_s=0.05)
    for i in range(10):  # steady progress: never fires
        dog.progress(f"step {i}")
        time.sleep(0.1)
    assert not fired
    time.sleep(1.0)  # hung
    assert len(fired) == 1 and fired[0][1] == "step 9" and fired[0][0] > 0.4
    dog.close()
    off = Watchdog(0, on_timeout=lambda *a: fired.append(a))
    off.progress("x")
    time.sleep(0.2)
    assert len(fired) == 1


def test_fault_spec_is_validated(monkeypatch):
    monkeypatch.setenv(faults.ENV, "kill_in_step@3,nan@7:p1")
    assert faults.active("kill_in_step", 3) and not faults.active("kill_in_step", 4)
    assert not faults.active("nan", 7)  # process 1 only; this is process 0
    monkeypatch.setenv(faults.ENV, "explode@3")
    with pytest.raises(ValueError, match="bad item 'explode@3'"):
        faults.active("nan", 3)
    monkeypatch.delenv(faults.ENV)
    assert not faults.active("nan", 3) and faults.temporary_path_class() is None
