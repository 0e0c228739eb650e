"""Pytest configuration shared by every test folder; the helpers live in `tests/helpers.py`."""

from __future__ import annotations

import jax
import pytest

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
