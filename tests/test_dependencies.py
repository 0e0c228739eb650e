"""Every third-party import of the project is declared in pyproject.toml.

A module that only happens to be installed on the developer's machine (matplotlib once) passes
every test there and crashes on a fresh one, so this walks the import statements of every
Python file (ast, nothing is imported) and checks each top-level module against the declared
distributions: `[project].dependencies` for the package, entry points, examples and benchmarks;
those plus the `test` extra for `tests/`.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

# Top-level project code that is imported as a module of its own (not third-party).
LOCAL = {"afc_jax", "configs", "benchmarks", "tests", "examples", "train", "eval"}
# Maintainer scripts the tests never run, and the extra that declares what they need on top
# (`pip install -e ".[fixtures]"` regenerates the committed .pth fixtures with real PyTorch).
MAINTAINER_SCRIPTS = {"tests/checkpoints/make_torch_fixtures.py": "fixtures"}
# Import names whose distribution is not found through the installed metadata on every
# platform (tensorflow is declared as tensorflow-cpu on Linux).
DISTRIBUTIONS_OF = {"tensorflow": {"tensorflow", "tensorflow-cpu"}}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def _extra(name: str) -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {_requirement_name(r) for r in project["optional-dependencies"][name]}


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    return runtime, runtime | _extra("test")


def _python_files() -> list[Path]:
    roots = ["afc_jax", "configs", "benchmarks", "examples", "tests", "train.py", "eval.py"]
    files = []
    for root in roots:
        path = REPO_ROOT / root
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _is_optional(node: ast.AST, parents: dict) -> bool:
    """An import inside `try: ... except ImportError/ModuleNotFoundError` is optional."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                names = ast.unparse(handler.type) if handler.type else ""
                if "ImportError" in names or "ModuleNotFoundError" in names:
                    return True
    return False


def _third_party_imports(path: Path):
    """(line, top-level module) of every absolute, non-optional, non-stdlib import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in LOCAL or top == "__future__":
                continue
            if not _is_optional(node, parents):
                yield node.lineno, top


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    found = _installed().get(module, [])
    return {_norm(d) for d in found} | DISTRIBUTIONS_OF.get(module, set())


def test_every_third_party_import_is_declared():
    runtime, with_test = _declared()
    problems = []
    for path in _python_files():
        rel = path.relative_to(REPO_ROOT).as_posix()
        allowed = with_test if rel.startswith("tests/") else runtime
        extra = MAINTAINER_SCRIPTS.get(rel)
        if extra:
            allowed = allowed | _extra(extra)
        for line, module in _third_party_imports(path):
            # not installed here: a maintainer script's module counts under its own name
            dists = _distributions(module) or ({_norm(module)} if extra else set())
            if not dists:
                problems.append(f"{rel}:{line}: `{module}` is not installed and not declared")
            elif not dists & allowed:
                where = "the `test` extra" if rel.startswith("tests/") else "`dependencies`"
                problems.append(
                    f"{rel}:{line}: `{module}` (distribution {'/'.join(sorted(dists))}) is "
                    f"imported but not declared in pyproject.toml's {where}"
                )
    assert not problems, "\n".join(problems)


def test_the_scan_sees_imports_in_every_form(tmp_path):
    # The check must be able to fail: plain, dotted, from-imports and function-local imports
    # are all found; a try/except ImportError import and relative imports are not.
    source = (
        "import os\nimport numpy as np\nfrom matplotlib import figure\n"
        "def f():\n    import tqdm.auto\n"
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "from . import sibling\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert sorted(m for _, m in _third_party_imports(path)) == ["matplotlib", "numpy", "tqdm"]


@pytest.mark.parametrize("module", ["matplotlib", "tqdm", "etils", "absl"])
def test_modules_a_fresh_machine_once_lacked_are_declared(module):
    runtime, _ = _declared()
    assert _distributions(module) & runtime, module
