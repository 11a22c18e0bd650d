"""`rar-tools bench`: encoding, adding, retrieval at scale, ranking modes and whole tool calls, timed.

    from rar_tools.bench import BenchConfig, run_bench
    run_bench(BenchConfig(sections=("retrieve",), sizes=(1000, 10000)))

Each section prints a table and puts every figure in the returned (and optionally written) JSON
document, with the configuration, package versions, CPU count and device they were measured on.

Importing this package (or `rar_tools.bench.config`, which the CLI reads for its flags) is light:
the sections, which load the models, are imported when `run_bench` is first named.
"""

from __future__ import annotations

from typing import Any

from rar_tools.bench.config import SECTIONS, BenchConfig


def __getattr__(name: str) -> Any:
    """`run_bench`, imported on first use (the runner imports every section and the models)."""
    if name == "run_bench":
        from rar_tools.bench.runner import run_bench

        return run_bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SECTIONS", "BenchConfig", "run_bench"]
