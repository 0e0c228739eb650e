"""The structure bar: functions fit on a screen; the lower layers never import training.

- No function (or method, or nested function) in afc_jax/, train.py or eval.py is longer than
  80 lines (decorators not counted).
- afc_jax.evaluation, models, layers, ops, checkpoints, data and analysis never import
  afc_jax.train, not even lazily inside a function; afc_jax/parallel.py (the mesh and
  shardings training and evaluation share) imports nothing of afc_jax.
- Nothing edits sys.path: the package and configs/ are installed (`pip install -e .`), so
  entry points, examples, benchmarks and the package import them like any user would.
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "afc_jax"
MAX_LINES = 80
LOWER_LAYERS = ("evaluation", "models", "layers", "ops", "checkpoints", "data", "analysis")


def _python_files(*roots: pathlib.Path) -> list[pathlib.Path]:
    files = []
    for root in roots:
        files += [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    return files


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function longer than `max_lines`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > max_lines:
                found.append((node.name, node.lineno, length))
    return found


def imported_modules(source: str) -> set[str]:
    """Every module an import statement anywhere in `source` names (`from a import b` gives
    `a` and `a.b`, since b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_training(source: str) -> list[str]:
    return sorted(
        m
        for m in imported_modules(source)
        if m == "afc_jax.train" or m.startswith("afc_jax.train.")
    )


def sys_path_edits(source: str) -> list[int]:
    """Lines that change sys.path (`sys.path.insert(...)` or any method call on it,
    `sys.path[...] = ...`, `sys.path += ...`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next(
                (t.value if isinstance(t, ast.Subscript) else t for t in targets), None
            )
        if isinstance(target, ast.Attribute) and target.attr == "path":
            if isinstance(target.value, ast.Name) and target.value.id == "sys":
                lines.append(node.lineno)
    return sorted(lines)


# ----------------------------------------------------------------------------- the checkers


def test_the_length_checker_counts_whole_functions_including_nested_ones():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES - 1))  # def line + 79 = 80
    at_limit = f"def fits():\n{body}\n"
    over = f"def outer():\n    def inner():\n{textwrap.indent(body, '    ')}\n        return 1\n"
    assert long_functions(at_limit) == []
    assert long_functions(over) == [("outer", 1, MAX_LINES + 2), ("inner", 2, MAX_LINES + 1)]


@pytest.mark.parametrize(
    "source, found",
    [
        ("from afc_jax.train import loop", ["afc_jax.train", "afc_jax.train.loop"]),
        (
            "def f():\n    from afc_jax.train.loop import build_model",
            ["afc_jax.train.loop", "afc_jax.train.loop.build_model"],
        ),
        ("import afc_jax.train.sharding as s", ["afc_jax.train.sharding"]),
        ("from afc_jax import train", ["afc_jax.train"]),
        ("from afc_jax import training_tools, parallel", []),
        ("from afc_jax.evaluation import train_like", []),
    ],
)
def test_the_import_checker_finds_training_imports_anywhere(source, found):
    assert imports_training(source) == found


@pytest.mark.parametrize(
    "source, lines",
    [
        ("import sys\nsys.path.insert(0, 'x')", [2]),
        ("import sys\n\ndef f():\n    sys.path.append('x')", [4]),
        ("import sys\nsys.path[:0] = ['x']", [2]),
        ("import sys\nsys.path += ['x']", [2]),
        ("import os\nos.path.join('a', 'b')", []),
        ("import sys\nprint(sys.path)", []),
    ],
)
def test_the_sys_path_checker_finds_edits(source, lines):
    assert sys_path_edits(source) == lines


# ----------------------------------------------------------------------------- the bar


def test_no_function_is_longer_than_80_lines():
    files = _python_files(PACKAGE, REPO / "train.py", REPO / "eval.py")
    too_long = [
        f"{path.relative_to(REPO)}:{line} {name} ({length} lines)"
        for path in files
        for name, line, length in long_functions(path.read_text())
    ]
    assert not too_long, "split by role:\n" + "\n".join(too_long)


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_never_import_training(layer):
    offenders = [
        f"{path.relative_to(REPO)}: {', '.join(found)}"
        for path in _python_files(PACKAGE / layer)
        if (found := imports_training(path.read_text()))
    ]
    assert not offenders, "\n".join(offenders)


def test_parallel_is_a_leaf_module():
    ours = sorted(
        m for m in imported_modules((PACKAGE / "parallel.py").read_text()) if "afc_jax" in m
    )
    assert ours == []


def test_nothing_edits_sys_path():
    roots = [PACKAGE, REPO / "configs", REPO / "examples", REPO / "benchmarks"]
    files = _python_files(*roots, REPO / "train.py", REPO / "eval.py")
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for path in files
        for line in sys_path_edits(path.read_text())
    ]
    assert not offenders, "import the installed package instead:\n" + "\n".join(offenders)
