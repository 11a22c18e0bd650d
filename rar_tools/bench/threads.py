"""Section `threads`: the CLIP encoder and the ranker on 1, 2 and the default number of torch threads
(`--threads` unset, see `rar_tools.threads`), on an otherwise idle process and beside a competing
load: `BUSY_LOOPS` busy-loop processes this section starts before and stops after those calls.

Encoder: ms per image for `IMAGES` images in one call; ranker: ms per score-mode ranking of k = 5
candidates. Every figure is a median of `--repeats` calls; the thread counts take turns in rotating
rounds, so drift in the machine's load reaches each alike.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rar_tools.bench.context import BenchContext
from rar_tools.bench.data import LABEL_NAMES
from rar_tools.bench.report import SectionResult, Table
from rar_tools.bench.timing import summarise, time_rounds
from rar_tools.images import load_image
from rar_tools.ranking import RankRequest
from rar_tools.threads import available_cores

log = logging.getLogger(__name__)
IMAGES = 4
K = 5
BUSY_LOOPS = 1
LOADS = ("idle", "busy")
BUSY_LOOP = "while True:\n    pass\n"
SETTLE_S = 0.5  # for the busy loop to start spinning before the first timed call


@contextmanager
def competing_load(busy: bool, processes: int = BUSY_LOOPS) -> Iterator[list[subprocess.Popen]]:
    """`processes` busy-loop Python processes running for the duration (none when not `busy`)."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(processes if busy else 0)]
    try:
        if loops:
            time.sleep(SETTLE_S)
        yield loops
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def on_threads(model: Any, count: int, call: Callable[[], Any]) -> Callable[[int], None]:
    """`call`, with `model` set to run on `count` torch threads."""

    def run(_round: int) -> None:
        model.threads = count
        call()

    return run


def thread_counts(default: int) -> list[int]:
    """1, 2 and the default, each once, in that order."""
    return list(dict.fromkeys([1, 2, default]))


def run(ctx: BenchContext) -> SectionResult:
    tools, config = ctx.tools, ctx.config
    models = {"encoder": tools.encoder, "ranker": tools.ranker}
    defaults = {name: model.threads for name, model in models.items()}
    images = [load_image(path).image for path in ctx.photos(IMAGES, seed=5)]
    request = RankRequest(images[0], tuple(LABEL_NAMES[:K]), mode="score")
    work = {
        "encoder": lambda: models["encoder"].encode_images(images),
        "ranker": lambda: models["ranker"].rank(request),
    }
    counts = {name: thread_counts(default) for name, default in defaults.items()}
    calls = {(name, n): on_threads(models[name], n, work[name]) for name in models for n in counts[name]}
    for call in calls.values():  # warm-up: a thread count's first call builds its thread team
        call(0)
    seconds: dict[str, dict[tuple[str, int], list[float]]] = {}
    try:
        for load in LOADS:
            log.info("threads: %s, thread counts %s, %d rounds", load, counts, config.repeats)
            with competing_load(load == "busy"):
                seconds[load] = time_rounds(calls, config.repeats, ctx.device)
    finally:
        for name, model in models.items():
            model.threads = defaults[name]
    per_item = {"encoder": IMAGES, "ranker": 1}
    figures: dict[str, Any] = {
        "cores": available_cores(),
        "default_threads": defaults,
        "busy_loops": BUSY_LOOPS,
        "encoder_images_per_call": IMAGES,
        "ranker_k": K,
    }
    for name in models:
        figures[name] = {
            str(n): {load: per(summarise(seconds[load][(name, n)]), per_item[name]) for load in LOADS}
            for n in counts[name]
        }
    return SectionResult("threads", [threads_table(ctx, figures)], figures)


def per(summary: dict[str, float], items: int) -> dict[str, float]:
    """A latency summary per item (image or ranking) rather than per call."""
    return {key: value / items if key.endswith("_ms") else value for key, value in summary.items()}


def threads_table(ctx: BenchContext, figures: dict[str, Any]) -> Table:
    """Per model and thread count: p50 ms idle and beside the busy loop, and their ratio."""
    rows = []
    for model, unit in (("encoder", "image"), ("ranker", "ranking")):
        for n, by_load in figures[model].items():
            idle, busy = (by_load[load]["p50_ms"] for load in LOADS)
            label = f"{n} (default)" if int(n) == figures["default_threads"][model] else n
            rows.append([model, f"ms/{unit}", label, f"{idle:.1f}", f"{busy:.1f}", f"{busy / idle:.2f}"])
    tools = ctx.tools
    return Table(
        f"torch threads: CLIP {tools.encoder.identity.describe()} ({IMAGES} images per call) and {tools.ranker.name} "
        f"(score mode, k = {K}) on {figures['cores']} cores, p50 of {ctx.config.repeats} calls; busy = "
        f"{BUSY_LOOPS} busy-loop process running",
        ["model", "unit", "threads", "idle p50", "busy p50", "busy / idle"],
        rows,
    )
