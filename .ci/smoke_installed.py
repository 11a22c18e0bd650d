"""Checks run by `.ci/smoke-installed` with the fresh environment's Python, from outside the checkout.

Usage: python smoke_installed.py WORK_DIR (the environment is WORK_DIR/venv)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from PIL import Image

import rar_tools

WORK = Path(sys.argv[1]).resolve()
RAR_TOOLS = WORK / "venv" / "bin" / "rar-tools"


def run(*arguments: str) -> str:
    """`rar-tools ARGUMENTS`; fails loudly with its stderr."""
    done = subprocess.run([str(RAR_TOOLS), *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"rar-tools {' '.join(arguments)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"smoke test failed: {what}")
    print(f"ok: {what}")


async def handshake(flags: list[str]) -> set[str]:
    params = StdioServerParameters(command=str(RAR_TOOLS), args=["serve", *flags])
    async with Client(params, mode="legacy") as client:
        return {tool.name for tool in (await client.list_tools()).tools}


def main() -> None:
    package = Path(rar_tools.__file__).resolve()
    check(package.is_relative_to(WORK / "venv"), f"rar_tools is imported from the installed wheel ({package})")
    check("add-labels" in run("--help"), "rar-tools --help")
    listed = run("vocabularies")
    check("cub_200: 200 labels" in listed and "lvis_v1: 1203 labels" in listed, "rar-tools vocabularies")

    subprocess.run(
        [sys.executable, "-m", "rar_tools.testing.tiny_models", str(WORK / "models")], check=True, capture_output=True
    )
    flags = ["--clip-model", f"local-dir:{WORK / 'models' / 'clip'}", "--ranker-model", str(WORK / "models" / "mllm")]
    flags += ["--data-dir", str(WORK / "data"), "--device", "cpu", "--log-level", "WARNING"]
    added = json.loads(run("add-labels", "pets", "--vocabulary", "oxford_pets", "--json", *flags))
    check(added["added"] == 37, "add-labels --vocabulary oxford_pets stores 37 label texts")

    for colour, rgb in {"red": (220, 30, 30), "blue": (30, 60, 220)}.items():
        Image.new("RGB", (64, 48), rgb).save(WORK / f"{colour}.png")
        added = json.loads(run("add", "colours", str(WORK / f"{colour}.png"), "--label", colour, "--json", *flags))
        check(added["added"] == 1, f"add {colour}.png")
    retrieved = json.loads(run("retrieve", "colours", str(WORK / "red.png"), "--k", "2", "--json", *flags))
    check({c["label"] for c in retrieved["candidates"]} == {"red", "blue"}, "retrieve returns both labels")
    ranked = json.loads(run("rank", str(WORK / "red.png"), "--candidates", "red", "blue", "--json", *flags))
    check(sorted(c["label"] for c in ranked["ranked"]) == ["blue", "red"], "rank orders both candidates")
    check("list_memories" in anyio.run(handshake, [*flags, "--no-ranker"]), "rar-tools serve answers over stdio")


if __name__ == "__main__":
    main()
