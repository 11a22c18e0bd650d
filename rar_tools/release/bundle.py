"""Building the `.mcpb` bundle: stage the package source, `pyproject.toml`, the README and the
generated manifest in a folder, then pack it with the MCPB tool from npm (`mcpb pack`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rar_tools.errors import RarToolsError
from rar_tools.release.launch import NAME, VERSION
from rar_tools.release.manifest import bundle_manifest
from rar_tools.release.registry import registry_entry

MCPB_PACKAGE = "@anthropic-ai/mcpb@2.1.2"
SOURCE_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_FILES = ("pyproject.toml", "README.md")
MANIFEST_FILE = Path("bundle") / "manifest.json"
REGISTRY_FILE = Path("server.json")


def json_text(document: dict[str, Any]) -> str:
    """A JSON file's text as this project writes it: indented, UTF-8, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[Path, str]:
    """{path relative to the checkout: text} of every file derived from the code."""
    return {MANIFEST_FILE: json_text(bundle_manifest()), REGISTRY_FILE: json_text(registry_entry())}


def write_generated(root: Path = SOURCE_ROOT) -> list[Path]:
    """Rewrite the derived files in checkout `root`; returns their paths."""
    written = []
    for relative, text in generated_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def source_checkout(root: Path = SOURCE_ROOT) -> Path:
    """`root` if it is a source checkout (the bundle is built from one), else an error."""
    missing = [name for name in (*BUNDLED_FILES, "rar_tools") if not (root / name).exists()]
    if missing:
        raise RarToolsError(f"{root} is not a rar-tools source checkout (no {', '.join(missing)})")
    return root


def stage_bundle(stage: Path, root: Path = SOURCE_ROOT) -> Path:
    """Fill folder `stage` with what the bundle carries: the manifest, the package, its project files."""
    source = source_checkout(root)
    stage.mkdir(parents=True, exist_ok=True)
    for name in BUNDLED_FILES:
        shutil.copy2(source / name, stage / name)
    shutil.copytree(source / "rar_tools", stage / "rar_tools", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (stage / "manifest.json").write_text(json_text(bundle_manifest()), encoding="utf-8")
    return stage


def mcpb(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the MCPB tool (`npx @anthropic-ai/mcpb ...`); its failures become errors with its output."""
    npx = shutil.which("npx")
    if npx is None:
        raise RarToolsError("npx (Node.js) is needed to validate and pack the bundle; it is not on PATH")
    done = subprocess.run([npx, "--yes", MCPB_PACKAGE, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise RarToolsError(f"mcpb {arguments[0]} failed:\n{done.stdout}{done.stderr}")
    return done


def pack_bundle(out_dir: Path, root: Path = SOURCE_ROOT) -> Path:
    """Stage and pack the bundle into `out_dir/rar-tools-VERSION.mcpb`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir.resolve() / f"{NAME}-{VERSION}.mcpb"
    with tempfile.TemporaryDirectory(prefix="rar-tools-bundle-") as folder:
        stage = stage_bundle(Path(folder) / NAME, root)
        mcpb("validate", str(stage / "manifest.json"))
        mcpb("pack", str(stage), str(target))
    return target
