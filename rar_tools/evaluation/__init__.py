"""Measure recognition accuracy on a labelled image set with RAR's few-shot protocol.

from rar_tools.evaluation import EvalConfig, evaluate, load_dataset
dataset = load_dataset("/data/cub100")
report, paths = evaluate(settings, dataset, EvalConfig(shots=(1, 4)), Path("eval-out"))
"""

from __future__ import annotations

from pathlib import Path

from rar_tools.evaluation.datasets import Dataset, DatasetError, LabelledImage, load_dataset
from rar_tools.evaluation.protocol import METHODS, EvalConfig, RunOptions, run_evaluation
from rar_tools.evaluation.records import EvaluationError
from rar_tools.evaluation.report import EvalReport, build_report, write_report
from rar_tools.settings import Settings


def evaluate(
    settings: Settings, dataset: Dataset, config: EvalConfig, out_dir: Path, options: RunOptions | None = None
) -> tuple[EvalReport, dict[str, Path]]:
    """Run the protocol, then write report.json, report.md and accuracy.png next to queries.jsonl."""
    out_dir, options = Path(out_dir), options or RunOptions()
    outcome = run_evaluation(settings, dataset, config, out_dir, options)
    report = build_report(settings, dataset, config.checked(), outcome, options.keep_memory)
    return report, write_report(report, out_dir)


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
