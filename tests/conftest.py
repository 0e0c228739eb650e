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

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import (  # noqa: E402, F401  (re-exported for convenience)
    nchw_to_nhwc,
    nhwc_to_nchw,
    rel_err,
    require_shared,
    shared_spec_dir,
)

jax.config.update("jax_enable_x64", False)


@pytest.fixture
def shared_spec():
    """Path of ../shared/spec; skips the test when the fixtures are absent."""
    return require_shared()


def pytest_collection_modifyitems(config, items):
    """Tests of an xdist_group (the long end-to-end chains) first, in their own order: a worker
    starts on them at once while the others share the short tests, instead of one worker
    starting them last. Every worker sorts the same way, as xdist requires."""
    del config
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
