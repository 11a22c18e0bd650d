"""The Claude Desktop bundle (`.mcpb`): the MCPB tool from npm validates the manifest and packs the
bundle, and the unpacked bundle starts the way a host starts it: the launch command comes from the
MCPB package's own `getMcpConfigForManifest` with a user's answers, and the server it starts serves
the tiny checkpoints over stdio.

One step differs from a host: a host lets uv install the dependencies into the bundle on first
start (`uv run` syncs); here uv runs the same command in this test's environment, which already
holds them (`UV_NO_SYNC`, `UV_PROJECT_ENVIRONMENT`). The bundled source still is what runs: the
command starts `python -m rar_tools` in the bundle's folder. Skipped where Node.js is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import make_image
from mcp import Client, StdioServerParameters

import rar_tools
from rar_tools.release.bundle import MANIFEST_FILE, MCPB_PACKAGE, mcpb, pack_bundle

ROOT = Path(rar_tools.__file__).resolve().parent.parent
LAUNCHER = Path(__file__).parent / "hosts" / "mcpb_launch.mjs"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("node", "npm", "npx")),
    reason="Node.js (node, npm, npx) is absent: the bundle tests need the MCPB tool from npm",
)


@pytest.fixture(scope="module")
def mcpb_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the MCPB package installed from npm (its CLI and the host-side functions)."""
    folder = tmp_path_factory.mktemp("mcpb")
    install = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent", MCPB_PACKAGE]
    subprocess.run(install, check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle as `python -m rar_tools.release pack` builds it."""
    return pack_bundle(tmp_path_factory.mktemp("dist"))


def test_the_committed_manifest_passes_mcpb_validate() -> None:
    assert "validation passes" in mcpb("validate", str(ROOT / MANIFEST_FILE)).stdout


def test_the_bundle_carries_the_package_and_its_project_files(packed: Path) -> None:
    names = set(zipfile.ZipFile(packed).namelist())
    assert {"manifest.json", "pyproject.toml", "README.md", "rar_tools/__main__.py"} <= names
    assert "rar_tools/data/vocabularies/cub_200.txt" in names
    assert not any("__pycache__" in name or name.startswith("memories/") for name in names)


def host_launch(mcpb_package: Path, extension: Path, answers: dict[str, Any], home: Path) -> dict[str, Any]:
    """The command, arguments and environment a host would start the unpacked bundle with."""
    answers_file = home / "answers.json"
    answers_file.write_text(json.dumps(answers), encoding="utf-8")
    node = ["node", str(LAUNCHER), str(mcpb_package), str(extension), str(answers_file), str(home)]
    return json.loads(subprocess.run(node, check=True, capture_output=True, text=True).stdout)


async def use_the_server(params: StdioServerParameters, pictures: Path, outside: Path) -> dict[str, Any]:
    """Add, retrieve, rank, list and one refused read through the bundle's server; the results."""
    async with Client(params, mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        for label in ("red", "blue"):
            added = await client.call_tool(
                "add_to_memory", {"memory": "m", "label": label, "images": [str(pictures / f"{label}.png")]}
            )
            assert not added.is_error, added.content
        image = str(pictures / "red.png")
        retrieved = await client.call_tool("retrieve_candidates", {"memory": "m", "image": image, "k": 2})
        ranked = await client.call_tool("rank_candidates", {"image": image, "candidates": ["red", "blue"]})
        refused = await client.call_tool("retrieve_candidates", {"memory": "m", "image": str(outside)})
        listing = await client.call_tool("list_memories", {})
    return {
        "tools": tools,
        "retrieved": retrieved.structured_content,
        "ranked": ranked.structured_content,
        "refused": refused,
        "listing": listing.structured_content,
    }


def test_the_unpacked_bundle_serves_as_a_host_starts_it(
    packed: Path, mcpb_package: Path, tiny_models_dir: Path, tmp_path: Path
) -> None:
    extension = tmp_path / "extension"
    subprocess.run(
        [str(mcpb_package / "node_modules" / ".bin" / "mcpb"), "unpack", str(packed), str(extension)],
        check=True,
        capture_output=True,
    )
    pictures = tmp_path / "Pictures"
    for seed, colour in enumerate(("red", "blue")):
        make_image(pictures / f"{colour}.png", colour, seed)
    outside = make_image(tmp_path / "elsewhere" / "green.png", "green", 7)
    answers = {
        "picture_folders": [str(pictures)],
        "clip_model": f"local-dir:{tiny_models_dir / 'clip'}",
        "ranker_model": str(tiny_models_dir / "mllm"),
        "device": "cpu",
    }  # the data folder and no_ranker keep their defaults
    launch = host_launch(mcpb_package, extension, answers, tmp_path)
    assert launch["command"] == "uv" and str(pictures) in launch["args"]

    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    uv = shutil.which("uv", path=path)
    if uv is None:
        pytest.skip("uv is absent (it comes with the dev extra)")
    in_place = {"UV_NO_SYNC": "1", "UV_PROJECT_ENVIRONMENT": sys.prefix, "PATH": path}
    env = {**os.environ, **launch["env"], **in_place, "XDG_DATA_HOME": str(tmp_path / "xdg"), "HF_HUB_OFFLINE": "1"}
    params = StdioServerParameters(command=uv, args=launch["args"], env=env, cwd=str(tmp_path))
    seen = anyio.run(use_the_server, params, pictures, outside)

    manifest = json.loads((extension / "manifest.json").read_text(encoding="utf-8"))
    assert seen["tools"] == {tool["name"] for tool in manifest["tools"]}
    assert {c["label"] for c in seen["retrieved"]["candidates"]} == {"red", "blue"}
    assert sorted(c["label"] for c in seen["ranked"]["ranked"]) == ["blue", "red"]
    assert seen["refused"].is_error and str(pictures) in seen["refused"].content[0].text
    assert seen["listing"]["data_dir"] == str(tmp_path / "xdg" / "rar-tools" / "memories")
