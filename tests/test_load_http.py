"""Load over streamable HTTP: 20 concurrent clients, 200 mixed calls (add, retrieve, rank, list) to
one `rar-tools serve` subprocess with the tiny models; zero errors, every add present afterwards,
p50/p95 latencies printed; bounded in time."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

import anyio
import numpy as np
from mcp import Client
from PIL import Image

CLIENTS = 20
CALLS_PER_CLIENT = 10
KINDS = ["add_to_memory", "retrieve_candidates", "rank_candidates", "list_memories"]
SEED_LABELS = ["red", "green", "blue", "yellow"]
OVERALL_LIMIT_S = 120


def photos(folder: Path, count: int) -> list[str]:
    """`count` distinct small PNG files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    paths = []
    for n in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / f"{n}.png")
        paths.append(str(folder / f"{n}.png"))
    return paths


def arguments(kind: str, call: int, images: list[str]) -> dict:
    """Arguments of call number `call` (0..199); each add stores a new image under its own label."""
    if kind == "add_to_memory":
        return {"memory": "load", "label": f"added {call}", "images": [images[call]]}
    if kind == "retrieve_candidates":
        return {"memory": "load", "image": images[call], "k": 3}
    if kind == "rank_candidates":
        return {"image": images[call], "candidates": SEED_LABELS[:3]}
    return {"max_labels": 5}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def test_twenty_concurrent_http_clients_make_200_calls_without_error(
    http_server, tmp_path: Path, tiny_models_dir: Path
) -> None:
    url = http_server("--ranker-model", str(tiny_models_dir / "mllm"))
    images = photos(tmp_path / "photos", CLIENTS * CALLS_PER_CLIENT)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    added_labels: list[str] = []

    async def client_session(client_index: int) -> None:
        async with Client(url) as client:
            for n in range(CALLS_PER_CLIENT):
                call = client_index * CALLS_PER_CLIENT + n
                kind = KINDS[call % len(KINDS)]
                started = time.perf_counter()
                result = await client.call_tool(kind, arguments(kind, call, images))
                latencies[kind].append(time.perf_counter() - started)
                if result.is_error:
                    errors.append(f"{kind}: {result.content[0].text}")
                elif kind == "add_to_memory":
                    added_labels.append(f"added {call}")

    async def run() -> tuple[dict, float]:
        with anyio.fail_after(OVERALL_LIMIT_S):
            async with Client(url) as client:  # seed the memory and warm both models up
                await client.call_tool("add_to_memory", {"memory": "load", "labels": SEED_LABELS})
                await client.call_tool("rank_candidates", arguments("rank_candidates", 0, images))
            started = time.perf_counter()
            async with anyio.create_task_group() as group:
                for index in range(CLIENTS):
                    group.start_soon(client_session, index)
            wall_s = time.perf_counter() - started
            async with Client(url) as client:
                listing = await client.call_tool("list_memories", {"max_labels": 10_000})
            return listing.structured_content["memories"][0], wall_s

    memory, wall_s = anyio.run(run)
    report = "\n".join(
        f"  {kind:<20} n={len(values):>3}  p50 {percentile(values, 50) * 1000:7.1f} ms  "
        f"p95 {percentile(values, 95) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
        for kind, values in latencies.items()
    )
    every_call = [v for values in latencies.values() for v in values]
    print(
        f"\n{len(every_call)} calls from {CLIENTS} concurrent clients over streamable HTTP in {wall_s:.1f} s "
        f"(p50 {statistics.median(every_call) * 1000:.1f} ms, p95 {percentile(every_call, 95) * 1000:.1f} ms):\n"
        + report
    )
    assert errors == []
    assert len(every_call) == CLIENTS * CALLS_PER_CLIENT
    assert len(added_labels) == CLIENTS * CALLS_PER_CLIENT // len(KINDS)
    assert all(memory["labels"].get(label) == 1 for label in added_labels)  # every add is present
    assert memory["count"] == len(SEED_LABELS) + len(added_labels)
