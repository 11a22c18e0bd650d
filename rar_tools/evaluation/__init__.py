"""Measure recognition accuracy on a labelled image set with RAR's few-shot protocol.

from rar_tools.evaluation import EvalConfig, evaluate, load_dataset
dataset = load_dataset("/data/cub100")
report, paths = evaluate(settings, dataset, EvalConfig(shots=(1, 4)), Path("eval-out"))

Importing this package is light (no torch, no models): the protocol and the report, which load the
models, are imported when `evaluate` runs (or `EvalReport` is first named).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rar_tools.evaluation.config import METHODS, EvalConfig, RunOptions
from rar_tools.evaluation.datasets import Dataset, DatasetError, LabelledImage, load_dataset
from rar_tools.evaluation.records import EvaluationError

if TYPE_CHECKING:
    from rar_tools.evaluation.report import EvalReport
    from rar_tools.settings import Settings


def evaluate(
    settings: Settings, dataset: Dataset, config: EvalConfig, out_dir: Path, options: RunOptions | None = None
) -> tuple[EvalReport, dict[str, Path]]:
    """Run the protocol, then write report.json, report.md and accuracy.png next to queries.jsonl."""
    from rar_tools.evaluation.protocol import run_evaluation
    from rar_tools.evaluation.report import build_report, write_report

    out_dir, options = Path(out_dir), options or RunOptions()
    config = config.with_adapter(settings.ranker_adapter is not None, settings.ranker_adapter_merge)
    outcome = run_evaluation(settings, dataset, config, out_dir, options)
    report = build_report(settings, dataset, config.checked(), outcome, options.keep_memory)
    return report, write_report(report, out_dir)


def __getattr__(name: str) -> Any:
    """`EvalReport`, imported on first use (the report module imports the protocol's models)."""
    if name == "EvalReport":
        from rar_tools.evaluation.report import EvalReport

        return EvalReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Dataset",
    "DatasetError",
    "EvalConfig",
    "EvalReport",
    "EvaluationError",
    "LabelledImage",
    "RunOptions",
    "evaluate",
    "load_dataset",
]
