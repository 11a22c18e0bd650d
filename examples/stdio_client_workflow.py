"""Drive `rar-tools serve` over stdio with the official MCP client, through the whole workflow:
retrieve, rank, correct the label (add to memory), retrieve again.

    python examples/stdio_client_workflow.py              # tiny random models, offline
    python examples/stdio_client_workflow.py --real       # the server's default real models

With the tiny random models the labels are meaningless; the protocol and the steps are real.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio
import numpy as np
from mcp import Client, StdioServerParameters
from PIL import Image

from rar_tools.testing.tiny_models import write_tiny_models


def photo(path: Path, rgb: tuple[int, int, int], seed: int) -> str:
    """A noisy single-colour stand-in for a photo."""
    noise = np.random.default_rng(seed).integers(-30, 30, (96, 96, 3))
    Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def server_parameters(work: Path, real: bool) -> StdioServerParameters:
    args = ["-m", "rar_tools", "serve", "--data-dir", str(work / "memories")]
    if not real:
        models = write_tiny_models(work / "models")
        args += ["--clip-model", f"local-dir:{models['clip']}", "--ranker-model", str(models["mllm"])]
    return StdioServerParameters(command=sys.executable, args=args)


async def workflow(params: StdioServerParameters, work: Path) -> None:
    jays = [photo(work / f"jay{n}.png", (40, 70, 210), n) for n in range(3)]
    cardinal = photo(work / "cardinal.png", (200, 30, 30), 10)
    async with Client(params, mode="legacy") as client:
        await client.call_tool("add_to_memory", {"memory": "birds", "images": jays[:2], "label": "blue jay"})
        await client.call_tool("add_to_memory", {"memory": "birds", "images": [cardinal], "label": "cardinal"})
        await client.call_tool("add_to_memory", {"memory": "birds", "labels": ["goldfinch", "house sparrow"]})

        query = jays[2]
        retrieved = await client.call_tool("retrieve_candidates", {"memory": "birds", "image": query, "k": 4})
        labels = [c["label"] for c in retrieved.structured_content["candidates"]]
        print("1. retrieved:", labels)

        ranked = await client.call_tool("rank_candidates", {"image": query, "candidates": labels})
        best = ranked.structured_content["best"]
        print("2. ranked:", [(c["label"], round(c["score"], 3)) for c in ranked.structured_content["ranked"]])

        confirmed = "blue jay"  # the user looks and says what it really is
        print(f"3. model said {best!r}; the user confirms {confirmed!r}: adding the image to memory")
        added = await client.call_tool("add_to_memory", {"memory": "birds", "images": [query], "label": confirmed})
        print("  ", added.structured_content["message"])

        again = await client.call_tool("retrieve_candidates", {"memory": "birds", "image": query, "k": 2})
        top = again.structured_content["candidates"][0]
        print(f"4. retrieved again: {top['label']!r} with similarity {top['image_similarity']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="use the server's default real models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rar-stdio-example-") as folder:  # removed afterwards
        work = Path(folder)
        anyio.run(workflow, server_parameters(work, args.real), work)


if __name__ == "__main__":
    main()
