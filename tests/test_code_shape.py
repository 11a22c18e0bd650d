"""The package stays readable: light imports where no model is needed, small modules and functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rar_tools"
HEAVY = ("torch", "transformers", "open_clip", "chromadb")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def heavy_modules_after(statement: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running `statement`."""
    code = f"{statement}; import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.split()


def test_regions_schemas_and_settings_import_no_torch() -> None:
    assert heavy_modules_after("import rar_tools.regions, rar_tools.schemas, rar_tools.settings") == []


@pytest.mark.parametrize(
    "modules",
    ["rar_tools", "rar_tools.requests, rar_tools.limits, rar_tools.validation", "rar_tools.server, rar_tools.cli"],
)
def test_the_surfaces_import_no_model_library(modules: str) -> None:
    """The server answers `initialize` before any model library is imported, and `--help` is quick."""
    assert heavy_modules_after(f"import {modules}") == []


def test_building_the_facade_and_the_parser_imports_no_model_library() -> None:
    statement = (
        "from rar_tools.api import RarTools; from rar_tools.settings import Settings; "
        "from rar_tools.cli import build_parser; build_parser(); RarTools(Settings(no_ranker=True))"
    )
    assert heavy_modules_after(statement) == []


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_450_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_the_facade_stays_thin() -> None:
    assert len((PACKAGE / "api.py").read_text(encoding="utf-8").splitlines()) < 250


def test_test_modules_import_their_helpers_as_pytest_puts_them_on_the_path() -> None:
    """`pytest` (the README's command) puts tests/ on the path, not the repository root: a test that
    imports `tests.conftest` runs under `python -m pytest` and fails to import under `pytest`."""
    offenders = []
    for path in sorted(PACKAGE.parent.joinpath("tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {name}" for name in names if name == "tests" or name.startswith("tests.")]
    assert offenders == []


# Modules that parse only JSON this package wrote itself (a marker, a training state, Chroma metadata,
# a child's protocol lines); all other JSON comes from outside and goes through `jsontext.parse_json`.
OWN_JSON_READERS = {"checkpoints.py", "finetune/checkpoints.py", "memory/catalogue.py", "bench/startup.py"}


def test_json_from_outside_is_parsed_by_parse_json() -> None:
    """`json.loads` raises RecursionError, not ValueError, on deeply nested text: a crash where a
    clear refusal was meant. Only `jsontext` and the readers of the package's own files call it."""
    offenders = []
    for path in python_files():
        name = str(path.relative_to(PACKAGE))
        if name == "jsontext.py" or name in OWN_JSON_READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                called = node.func
                on_json = isinstance(called.value, ast.Name) and called.value.id == "json"
                if on_json and called.attr in ("loads", "load"):
                    offenders.append(f"{name}:{node.lineno} json.{called.attr}")
                elif called.attr == "json" and not node.args and not node.keywords:
                    offenders.append(f"{name}:{node.lineno} .json()")
    assert offenders == []
