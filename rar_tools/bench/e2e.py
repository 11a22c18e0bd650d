"""Section `e2e`: `retrieve_candidates` and `recognize` as whole MCP tool calls, in process and over
stdio, against the time the API spends inside each call (from the result's own timings); and the
start-up figures measured from spawn (`startup.py`): stdio server to `initialize`, and `--help`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from rar_tools.bench.context import BenchContext
from rar_tools.bench.report import SectionResult, Table, Target
from rar_tools.bench.startup import SPAWNS, child_env, measure_startup, serve_command, startup_rows, startup_targets
from rar_tools.bench.timing import summarise, time_calls
from rar_tools.server import create_server
from rar_tools.settings import Settings

log = logging.getLogger(__name__)
MEMORY = "bench-e2e"
TOOLS = ("retrieve_candidates", "recognize")
MAX_OVERHEAD_MS = 5.0
K = 5


def inner_seconds(tool: str, structured: dict[str, Any]) -> float:
    """The API's own time inside a tool call, from the timings in its result."""
    timings = structured["timings"]
    return timings["total_s"] if tool == "recognize" else sum(timings.values())


async def fill_memory(client: Client, photos: list[str]) -> None:
    """Two exemplars per label through `add_to_memory`."""
    for start in range(0, len(photos), 2):
        arguments = {"memory": MEMORY, "images": photos[start : start + 2], "label": f"label {start // 2}"}
        result = await client.call_tool("add_to_memory", arguments)
        if result.is_error:
            raise RuntimeError(f"add_to_memory failed: {result.content[0].text}")


async def time_tools(client: Client, image: str, repeats: int) -> dict[str, dict[str, Any]]:
    """Per tool: end-to-end, inner (API) and overhead (the difference) durations of `repeats` calls."""
    figures = {}
    for tool in TOOLS:
        arguments = {"memory": MEMORY, "image": image, "k": K}
        await client.call_tool(tool, arguments)  # warm-up (and, over stdio, waits for the models)
        e2e, inner = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            result = await client.call_tool(tool, arguments)
            e2e.append(time.perf_counter() - start)
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content[0].text}")
            inner.append(inner_seconds(tool, result.structured_content))
        overhead = [a - b for a, b in zip(e2e, inner)]
        figures[tool] = {"e2e": summarise(e2e), "inner": summarise(inner), "overhead": summarise(overhead)}
    return figures


def stdio_parameters(settings: Settings, data_dir: Path) -> StdioServerParameters:
    """`rar-tools serve` with the run's models, importing the same rar_tools as this process."""
    command, *args = serve_command(settings, data_dir, ranker=True)
    return StdioServerParameters(command=command, args=args, env=child_env())


async def in_process(ctx: BenchContext, photos: list[str]) -> dict[str, dict[str, Any]]:
    async with Client(create_server(ctx.tools)) as client:
        await fill_memory(client, photos)
        return await time_tools(client, photos[0], ctx.config.repeats)


async def over_stdio(ctx: BenchContext, photos: list[str]) -> dict[str, dict[str, Any]]:
    async with Client(stdio_parameters(ctx.tools.settings, ctx.work_dir / "stdio-memories"), mode="legacy") as client:
        await fill_memory(client, photos)
        return await time_tools(client, photos[0], ctx.config.repeats)


def direct_api(ctx: BenchContext, image: str) -> dict[str, dict[str, float]]:
    """The same calls on the Python API, no protocol."""
    tools, repeats = ctx.tools, ctx.config.repeats
    return {
        "retrieve_candidates": summarise(time_calls(lambda: tools.retrieve(MEMORY, image, K), repeats, ctx.device)),
        "recognize": summarise(time_calls(lambda: tools.recognize(MEMORY, image, K), repeats, ctx.device)),
    }


def run(ctx: BenchContext) -> SectionResult:
    photos = ctx.photos(ctx.config.e2e_images, seed=4)
    log.info("e2e: in-process client")
    local = anyio.run(in_process, ctx, photos)
    direct = direct_api(ctx, photos[0])
    log.info("e2e: stdio subprocess")
    stdio = anyio.run(over_stdio, ctx, photos)
    log.info("e2e: start-up from spawn, %d spawns each", SPAWNS)
    startup = measure_startup(ctx.tools.settings, ctx.work_dir)
    start_targets, notes = startup_targets(startup)
    targets = [
        Target(
            f"in-process protocol overhead p50, {tool}",
            local[tool]["overhead"]["p50_ms"],
            MAX_OVERHEAD_MS,
            False,
            " ms",
        )
        for tool in TOOLS
    ]
    figures = {"api": direct, "in_process": local, "stdio": stdio, "k": K, "exemplars": len(photos)}
    figures["startup"] = startup
    tables = [calls_table(ctx, photos, direct, local, stdio), startup_table(startup)]
    return SectionResult("e2e", tables, figures, targets + start_targets, notes)


def calls_table(ctx: BenchContext, photos: list[str], direct: dict, local: dict, stdio: dict) -> Table:
    """Per tool: the API call, then the in-process and stdio tool calls with their overhead."""
    rows = []
    for tool in TOOLS:
        rows.append([tool, "API call", f"{direct[tool]['p50_ms']:.1f}", f"{direct[tool]['p95_ms']:.1f}", "-", "-"])
        for transport, figures in (("in process", local), ("stdio", stdio)):
            f = figures[tool]
            rows.append(
                [
                    tool,
                    transport,
                    f"{f['e2e']['p50_ms']:.1f}",
                    f"{f['e2e']['p95_ms']:.1f}",
                    f"{f['overhead']['p50_ms']:.2f}",
                    f"{f['overhead']['p95_ms']:.2f}",
                ]
            )
    return Table(
        f"tool calls, ms ({ctx.config.repeats} calls after a warm-up, k={K}, memory of {len(photos)} exemplars); "
        "overhead = call time - the API's own time in that call",
        ["tool", "path", "p50", "p95", "overhead p50", "overhead p95"],
        rows,
    )


def startup_table(startup: dict[str, Any]) -> Table:
    return Table(
        f"start-up from spawn, s (median of {startup['spawns']} fresh processes)",
        ["what", "median", "runs", "target"],
        startup_rows(startup),
    )
