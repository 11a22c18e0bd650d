"""rar-tools from a client not written in Python: examples/typescript_client/battery.mjs runs the
TypeScript MCP SDK against `rar-tools serve` (tiny models) over stdio and streamable HTTP: tool
metadata, the workflow, and hostile calls that must come back as errors naming the problem.

Needs Node.js and the SDK from the npm registry; skipped, saying why, where either is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "examples" / "typescript_client"


@pytest.fixture(scope="module")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example client with its npm dependencies installed, in a temporary folder."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js (node and npm) is not installed")
    folder = tmp_path_factory.mktemp("typescript-client")
    for name in ("package.json", "battery.mjs"):
        shutil.copy(CLIENT / name, folder / name)
    try:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm could not install the TypeScript MCP SDK (no registry?): {exc}")
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("typescript-pictures")
    subprocess.run([sys.executable, str(CLIENT / "make_images.py"), str(folder)], check=True)
    return folder


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_typescript_sdk_client_runs_the_workflow_and_every_hostile_call_is_refused_by_name(
    transport: str, client_dir: Path, pictures: Path, tiny_models_dir: Path
) -> None:
    env = {
        **os.environ,
        "RAR_CMD": json.dumps([sys.executable, "-m", "rar_tools"]),
        "RAR_MODELS": str(tiny_models_dir),
        "RAR_IMAGES": str(pictures),
        "RAR_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        ["node", "battery.mjs", transport], cwd=client_dir, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and "failed 0" in run.stdout, run.stdout + run.stderr[-2000:]
    passed = int(run.stdout.split("passed ")[1].split(",")[0])
    assert passed >= 70  # the tool checks (4 per tool) and the calls all ran
