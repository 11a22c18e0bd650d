"""Which module may import which, read from the source with `ast`, and which imports stay light.

- Production code never imports the test helpers (`rar_tools.testing`); the benchmark alone may, at
  call time, to write its random checkpoints.
- Nothing outside `rar_tools.bench` imports the benchmark, except the CLI's `bench` command, at call time.
- Nothing outside `rar_tools.release` imports the distribution builder (it runs `npx`).
- The evaluation's dataset loader does not import the API (and so no models).
- The modules the CLI reads to build its parser import no torch, transformers, open_clip or chromadb.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rar_tools"
HEAVY = ("torch", "transformers", "open_clip", "chromadb")
LIGHT_MODULES = (
    "rar_tools.bench.config",
    "rar_tools.evaluation.datasets",
    "rar_tools.evaluation.sampling",
    "rar_tools.ranking.parsing",
    "rar_tools.ranking.prompts",
    "rar_tools.ranking.messages",
)
# Modules allowed to import a package only inside a function (at call time), never at import time.
CALL_TIME_TESTING_USERS = {"rar_tools/bench/context.py"}  # writes the tiny / random ranker checkpoints
CALL_TIME_BENCH_USERS = {"rar_tools/cli.py"}  # the `rar-tools bench` command and its flags


@dataclass(frozen=True)
class Import:
    module: str  # the imported module, or module.name for `from module import name`
    line: int
    call_time: bool  # inside a function body: runs when the function is called


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an `ImportFrom` names, relative imports resolved against `path`'s package."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> list[Import]:
    """Every import statement in `path` (and `importlib.import_module("...")` with a literal name)."""
    found: list[Import] = []

    def visit(node: ast.AST, call_time: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, call_time) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node, path)
            found.append(Import(module, node.lineno, call_time))
            found.extend(Import(f"{module}.{alias.name}", node.lineno, call_time) for alias in node.names)
        elif isinstance(node, ast.Call) and dynamic_import(node):
            found.append(Import(node.args[0].value, node.lineno, call_time))
        inner = call_time or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def dynamic_import(node: ast.Call) -> bool:
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    literal = bool(node.args) and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
    return name in ("import_module", "__import__") and literal


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def production_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts[:1])


def violations(package: str, exempt_dir: str, call_time_users: set[str]) -> list[str]:
    """'file:line module' for each import of `package` from outside `exempt_dir`, bar allowed call-time ones."""
    found = []
    for path in production_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(exempt_dir + "/"):
            continue
        for imp in imports_of(path):
            if within(imp.module, package) and not (imp.call_time and rel in call_time_users):
                when = "call time" if imp.call_time else "import time"
                found.append(f"{rel}:{imp.line} imports {imp.module} at {when}")
    return found


def test_production_modules_never_import_the_test_helpers() -> None:
    assert violations("rar_tools.testing", "rar_tools/testing", CALL_TIME_TESTING_USERS) == []


def test_only_the_cli_imports_the_benchmark_and_only_when_a_command_runs() -> None:
    assert violations("rar_tools.bench", "rar_tools/bench", CALL_TIME_BENCH_USERS) == []


def test_no_production_module_imports_the_distribution_builder() -> None:
    assert violations("rar_tools.release", "rar_tools/release", set()) == []


def test_the_benchmark_imports_the_checkpoint_writers_only_at_call_time() -> None:
    """The allowance above is used as described (this also shows the walker sees function-local imports)."""
    found = [i for i in imports_of(PACKAGE / "bench" / "context.py") if within(i.module, "rar_tools.testing")]
    assert found and all(i.call_time for i in found)


def test_the_dataset_loader_does_not_import_the_api() -> None:
    modules = [i.module for i in imports_of(PACKAGE / "evaluation" / "datasets.py")]
    assert not [m for m in modules if within(m, "rar_tools.api")]


def test_relative_imports_are_resolved() -> None:
    node = ast.parse("from ..testing import marker").body[0]
    assert absolute(node, PACKAGE / "bench" / "context.py") == "rar_tools.testing"
    node = ast.parse("from . import runner").body[0]
    assert absolute(node, PACKAGE / "bench" / "__init__.py") == "rar_tools.bench"


def heavy_modules_after(code: str) -> list[str]:
    """The heavy packages in `sys.modules` after a fresh interpreter runs `code` from the worktree."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    report = f"import sys, json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_parser_modules_are_light_on_their_own_imports() -> None:
    """The modules themselves (the package's own `__init__` skipped) pull in no heavy package."""
    stub = (
        "import sys, types\n"
        f"package = types.ModuleType('rar_tools'); package.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['rar_tools'] = package\n"
    )
    code = stub + f"import {', '.join(LIGHT_MODULES)}\nfrom rar_tools.evaluation import METHODS\nimport rar_tools.bench"
    assert heavy_modules_after(code) == []


def test_parser_modules_import_no_heavy_package() -> None:
    assert heavy_modules_after(f"import {', '.join(LIGHT_MODULES)}") == []
