"""`rar-tools bench`: encoding, adding, retrieval at scale, ranking modes and whole tool calls, timed.

    from rar_tools.bench import BenchConfig, run_bench
    run_bench(BenchConfig(sections=("retrieve",), sizes=(1000, 10000)))

Each section prints a table and puts every figure in the returned (and optionally written) JSON
document, with the configuration, package versions, CPU count and device they were measured on.
"""

from rar_tools.bench.config import SECTIONS, BenchConfig
from rar_tools.bench.runner import run_bench

__all__ = ["SECTIONS", "BenchConfig", "run_bench"]
