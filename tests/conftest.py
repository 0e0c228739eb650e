"""Pytest configuration shared by every test folder; the helpers live in `tests/helpers.py`."""

from __future__ import annotations

import os

# XLA flags; they must precede the first jax import.
# - Eight simulated CPU devices for the sharding tests.
# - XLA:CPU backend optimization level 0: the suite is dominated by compiling many small
#   programs once each, and -O0 halves compile time; these tiny tensors run about as fast, and
#   every numerical claim is checked at float32 tolerance either way. Set the flag yourself (e.g.
#   XLA_FLAGS=--xla_backend_optimization_level=2) to test the optimized code generation.
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if "--xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
# The tests run on the CPU. With libtpu installed (the `test` extra, for
# tests/benchmarks/test_tpu_compile.py) JAX would otherwise probe for a TPU in every process
# and subprocess; pinning the platform keeps the suite independent of libtpu.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import hypothesis  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402
from etils.epath import gpath  # noqa: E402
from etils.epath import testing as epath_testing  # noqa: E402

from tests.helpers import (  # noqa: E402, F401  (re-exported for convenience)
    nchw_to_nhwc,
    nhwc_to_nchw,
    official_fixture,
    rel_err,
)

jax.config.update("jax_enable_x64", False)

# Hypothesis draws the same examples on every CI run (derandomized), so a red CI reproduces.
# Hypothesis loads its built-in "ci" profile (derandomize=True) when CI is set; say it here.
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


@pytest.fixture
def fake_bucket(tmp_path, monkeypatch):
    """A fake gs:// for epath: records (operation, path, mode) of every call on a gs:// path
    and keeps `gs://x` in tmp_path/gs/x; local paths work as usual. Yields (calls, local)."""
    monkeypatch.chdir(tmp_path)  # a regression that writes "gs:/..." locally stays in tmp_path
    calls = []

    def local(path):
        return str(tmp_path / "gs" / os.fspath(path)[len("gs://") :])

    def fake(name, fn):
        def call(original, path, *args, **kwargs):
            if not os.fspath(path).startswith("gs://"):  # local files: the real thing
                return original(path, *args, **kwargs)
            calls.append((name, os.fspath(path), *args))  # the real one would reach for GCS
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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "optional_dependency(name): the test needs a package that is not a dependency (e.g. "
        "torch for a cross-check); it may skip without it, even in CI",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With AFC_JAX_FORBID_SKIPS=1 (`.ci/run` sets it) a skipped test fails the run, unless it
    is marked `optional_dependency`: parity and equivariance tests must never skip in CI."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("AFC_JAX_FORBID_SKIPS") == "1"
        and item.get_closest_marker("optional_dependency") is None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, which AFC_JAX_FORBID_SKIPS=1 forbids: {reason}"


def pytest_collection_modifyitems(config, items):
    """Tests of an xdist_group (the long end-to-end chains) first, in their own order: a worker
    starts on them at once while the others share the short tests, instead of one worker
    starting them last. Every worker sorts the same way, as xdist requires."""
    del config
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
