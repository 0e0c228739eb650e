"""Entry-point support: quiet third-party logs, keep actionable warnings."""

from __future__ import annotations

import logging
import os

from absl import logging as absl_logging

from afc_jax import cli


def test_quiet_logs_drops_known_noise_and_keeps_other_warnings(caplog, monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    before = absl_logging.get_verbosity()
    logger = logging.getLogger("absl")
    try:
        cli.quiet_logs(verbose=False)
        with caplog.at_level(logging.INFO, logger="absl"):
            logger.warning("`FeatureConnector.dtype` is deprecated. Please change your code")
            logger.warning("Variant folder /x/1.0.0 has no dataset_info.json")
            logger.warning("checkpoint 8 failed its integrity check; using 4")
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ["checkpoint 8 failed its integrity check; using 4"]
        assert absl_logging.get_verbosity() == absl_logging.WARNING
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    finally:
        for f in list(logger.filters):
            if isinstance(f, cli._DropNoise):
                logger.removeFilter(f)
        absl_logging.set_verbosity(before)


def test_verbose_leaves_logging_alone(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # a user's own setting is kept
    before = absl_logging.get_verbosity()
    cli.quiet_logs(verbose=True)
    assert absl_logging.get_verbosity() == before
    assert not any(isinstance(f, cli._DropNoise) for f in logging.getLogger("absl").filters)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
