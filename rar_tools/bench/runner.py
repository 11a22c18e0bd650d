"""Run the benchmark sections in order, print each table as it completes, and write the JSON."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rar_tools.bench import add, describe, e2e, encode, rank, retrieve, segment, threads
from rar_tools.bench.config import BenchConfig
from rar_tools.bench.context import BenchContext
from rar_tools.bench.report import SectionResult, environment, render_section, write_json
from rar_tools.devices import resolve_device

log = logging.getLogger(__name__)
RUNNERS: dict[str, Callable[[BenchContext], SectionResult]] = {
    "encode": encode.run,
    "add": add.run,
    "retrieve": retrieve.run,
    "rank": rank.run,
    "e2e": e2e.run,
    "segment": segment.run,
    "describe": describe.run,
    "threads": threads.run,
}


@contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    """`path`, created if needed, or a temporary folder removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="rar-bench-") as tmp:
        yield Path(tmp)


def run_bench(config: BenchConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run `config.sections`; returns (and writes to `config.json_path`) every figure with the
    configuration and environment they were measured in."""
    config = config.resolved(resolve_device(config.device))
    started = time.perf_counter()
    results: dict[str, SectionResult] = {}
    with work_folder(config.work_dir) as work_dir:
        ctx = BenchContext.create(config, work_dir)
        try:
            for name in config.sections:
                section_started = time.perf_counter()
                results[name] = RUNNERS[name](ctx)
                results[name].figures["section_s"] = time.perf_counter() - section_started
                echo(render_section(results[name]))
        finally:
            ctx.tools.close()
    targets = [t for r in results.values() for t in r.targets]
    document = {
        "config": {**asdict(config), "ranker_model_path": ctx.tools.settings.ranker_model},
        "environment": environment(config.device),
        "sections": {name: r.to_json() for name, r in results.items()},
        "targets_met": sum(t.met for t in targets),
        "targets_total": len(targets),
        "total_s": time.perf_counter() - started,
    }
    echo(f"targets met: {document['targets_met']} of {document['targets_total']}; total {document['total_s']:.0f} s")
    if config.json_path:
        write_json(config.json_path, document)
        echo(f"wrote {config.json_path}")
    return document
