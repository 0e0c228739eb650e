"""Pytest configuration shared by every test folder; the helpers live in `tests/helpers.py`."""

from __future__ import annotations

import os

# Eight simulated CPU devices for the sharding tests; must precede the first jax import.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import (  # noqa: F401  (re-exported for convenience)
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
