"""The compile-table sweep's bookkeeping (`benchmarks.tpu_compile.sweep`), with the compiles
themselves replaced by a stub: parallel rows (`--jobs`), one scratch file per row, rows recorded
as they finish, failures, kept notes, and skipping rows the table already has."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from benchmarks.tpu_compile import sweep

V6E_ROWS = {  # what `--only v6e:16x16` selects
    ("v6e:16x16", f"{family}_{size}")
    for family in ("convnext_afc", "convnext_baseline_circular")
    for size in ("tiny", "base")
}


def _step(fits: bool = True) -> dict:
    return {
        "flops_per_device": 1.0e12,
        "bytes_accessed_per_device": 4.0e10,
        "hbm_bytes_per_device": 3.0e9,
        "hbm_capacity_bytes": 3.2e10,
        "fits": fits,
        "roofline": {"step_time_s": 0.05, "bound_by": "memory"},
        "compile_s": 1.0,
    }


def _report(topology: str, model: str) -> dict:
    return {
        "topology": topology,
        "model": model,
        "per_device_batch": 16,
        "setting": "",
        "commit": "abc1234",
        "versions": {"jax": "0.0-test"},
        "train_step": _step(),
        "eval_step": _step(),
    }


class _StubCompiler:
    """Stands in for `run_one`: records what ran, how many at once and with which files."""

    def __init__(self, fail: str | None = None):
        self.fail, self.calls, self.tmps = fail, [], []
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, topology, model, tmp, timeout):
        with self._lock:
            self.calls.append((topology, model))
            self.tmps.append(tmp)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        with open(tmp, "w") as f:  # what a compile leaves behind
            f.write("{}")
        time.sleep(0.3)
        with self._lock:
            self.active -= 1
        if model == self.fail:
            return None, "does not fit even with model.remat=stage"
        return _report(topology, model), ""


def _sweep(monkeypatch, out, *args, stub):
    monkeypatch.setattr(sweep, "run_one", stub)
    monkeypatch.setattr(sys, "argv", ["sweep", "--out", str(out), "--only", "v6e:16x16", *args])
    sweep.main()
    return json.loads((out / "tpu_compile.json").read_text())


def test_parallel_rows_are_all_recorded_with_separate_scratch_files(monkeypatch, tmp_path):
    (tmp_path / "tpu_compile.json").write_text(json.dumps({"notes": ["kept note"]}))
    stub = _StubCompiler(fail="convnext_afc_base")
    saved = _sweep(monkeypatch, tmp_path, "--jobs", "2", stub=stub)
    assert set(stub.calls) == V6E_ROWS
    assert stub.max_active == 2, "--jobs 2 ran the compiles one at a time"
    assert len(set(stub.tmps)) == len(stub.tmps)
    assert not list(tmp_path.glob(".tpu_compile_tmp*")), "scratch reports left behind"
    assert {(r["topology"], r["model"]) for r in saved["results"]} == V6E_ROWS - {
        ("v6e:16x16", "convnext_afc_base")
    }
    assert saved["failures"] == [
        {
            "topology": "v6e:16x16",
            "model": "convnext_afc_base",
            "reason": "does not fit even with model.remat=stage",
        }
    ]
    assert saved["notes"] == ["kept note"]
    markdown = (tmp_path / "tpu_compile.md").read_text()
    assert "kept note" in markdown and "jax 0.0-test" in markdown
    assert markdown.count("| v6e:16x16 |") == 3
    assert "convnext_afc_base on v6e:16x16: does not fit" in markdown


def test_rerun_skips_recorded_rows_and_redo_replaces_them(monkeypatch, tmp_path):
    _sweep(monkeypatch, tmp_path, stub=_StubCompiler())
    again = _StubCompiler()
    saved = _sweep(monkeypatch, tmp_path, "--jobs", "2", stub=again)
    assert again.calls == [] and len(saved["results"]) == len(V6E_ROWS)
    redo = _StubCompiler()
    saved = _sweep(monkeypatch, tmp_path, "--redo", "--models", "convnext_afc_tiny", stub=redo)
    assert redo.calls == [("v6e:16x16", "convnext_afc_tiny")]
    assert len(saved["results"]) == len(V6E_ROWS)  # replaced, not duplicated


def test_jobs_must_be_positive(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _sweep(monkeypatch, tmp_path, "--jobs", "0", stub=_StubCompiler())
    assert exc.value.code == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
