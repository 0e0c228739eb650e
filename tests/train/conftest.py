"""Session fixtures of the training tests: the digits data and one uninterrupted reference run.

The reference (train.py on the digits, 2 epochs = 44 steps, checkpoints every 8) is trained once
per session; test_loop.py checks its outputs and test_faults.py compares every interrupted,
corrupted or re-sharded run against it.
"""

from __future__ import annotations

import pytest

from tests.train import helpers


@pytest.fixture(scope="session")
def data_dir():
    from tests.data import digits_data_dir

    return digits_data_dir()  # afc_digits at 32x32, built once per session


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    out = helpers.run(workdir, data_dir)
    return workdir, out
