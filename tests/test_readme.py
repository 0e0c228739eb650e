"""The README's Quick start: exactly two set-up commands, and CI runs the test one as written."""

from __future__ import annotations

import importlib.util

from tests.helpers import REPO_ROOT


def _readme_commands():
    spec = importlib.util.spec_from_file_location(
        "readme_commands", REPO_ROOT / ".ci" / "readme_commands.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_start_has_the_main_job_and_the_test_command():
    commands = _readme_commands().quick_start_commands((REPO_ROOT / "README.md").read_text())
    assert commands["main"].startswith("pip install -e . && python ")
    script = commands["main"].split("python ", 1)[1].split()[0]
    assert (REPO_ROOT / script).is_file(), script
    assert commands["test"] == 'pip install -e ".[test]" && python -m pytest -q'


def test_ci_runs_the_readme_test_command_in_a_new_virtualenv():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci and "readme_commands.py test" in ci
    assert 'bash -c "$test_command"' in ci and "ruff check ." in ci
    assert "AFC_JAX_FORBID_SKIPS=1" in ci


def test_a_third_command_in_quick_start_is_refused():
    text = (
        "## Quick start\n```bash\npip install -e . && python a.py\n```\n"
        '```bash\npip install -e ".[test]" && python -m pytest -q\n```\n'
        "```bash\nmake extra\n```\n## Next\n"
    )
    import pytest

    with pytest.raises(SystemExit, match="two one-line bash commands"):
        _readme_commands().quick_start_commands(text)
