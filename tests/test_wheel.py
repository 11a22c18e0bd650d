"""The built wheel: it carries every file the package reads at run time, and, unpacked outside the
checkout, it finds its vocabularies and keeps its data out of the package folder.

(`.ci/smoke-installed` goes further: it installs the wheel into a fresh virtual environment and
runs add / retrieve / rank there.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rar_tools

ROOT = Path(rar_tools.__file__).resolve().parent.parent
SHIPPED = {"cub_200", "fgvc_aircraft", "lvis_v1", "oxford_flowers_102", "oxford_pets"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds from a copy of this checkout's project files (a copy, so that no
    earlier build folder of the checkout can leak into it)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "rar_tools", source / "rar_tools", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(out)], check=True, capture_output=True, cwd=source)
    return next(out.glob("rar_tools-*.whl"))


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked into an empty folder, as an installer lays it into site-packages."""
    folder = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder


def run_unpacked(site: Path, cwd: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python ARGUMENTS` from folder `cwd` with the unpacked wheel first on the import path."""
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True)


def test_the_wheel_carries_every_data_file_of_the_package(wheel: Path) -> None:
    package = ROOT / "rar_tools"
    data_files = {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"rar_tools/data/vocabularies/{name}.txt" for name in SHIPPED} <= data_files
    assert data_files <= names


def test_the_wheel_carries_only_the_package(wheel: Path) -> None:
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"rar_tools", f"{wheel.name.split('-')[0]}-{rar_tools.__version__}.dist-info"}


def test_the_wheel_version_is_the_package_version(wheel: Path) -> None:
    assert wheel.name.startswith(f"rar_tools-{rar_tools.__version__}-")


def test_an_unpacked_wheel_lists_its_vocabularies_from_outside_the_checkout(site: Path, tmp_path: Path) -> None:
    done = run_unpacked(site, tmp_path, "-m", "rar_tools", "vocabularies")
    assert done.returncode == 0, done.stderr
    listed = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert set(listed) == SHIPPED
    assert "oxford_pets: 37 labels" in listed["oxford_pets"] and str(site) in listed["oxford_pets"]


def test_an_unpacked_wheel_loads_a_vocabulary_into_a_memory(site: Path, tmp_path: Path, clip_model: str) -> None:
    flags = ["--clip-model", clip_model, "--data-dir", str(tmp_path / "data"), "--json"]
    done = run_unpacked(site, tmp_path, "-m", "rar_tools", "add-labels", "pets", "--vocabulary", "oxford_pets", *flags)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 37


def test_an_installed_package_keeps_its_memories_in_the_user_data_folder(site: Path, tmp_path: Path) -> None:
    code = "import rar_tools, rar_tools.settings as s; print(rar_tools.__file__); print(s.default_data_dir())"
    done = run_unpacked(site, tmp_path, "-c", code, XDG_DATA_HOME=str(tmp_path / "xdg"))
    package_file, data_dir = done.stdout.splitlines()
    assert Path(package_file).is_relative_to(site)
    assert Path(data_dir) == tmp_path / "xdg" / "rar-tools" / "memories"


def test_a_source_checkout_keeps_its_memories_in_its_memories_folder() -> None:
    from rar_tools.settings import default_data_dir

    assert default_data_dir() == ROOT / "memories"
