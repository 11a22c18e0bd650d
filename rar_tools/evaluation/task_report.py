"""What the segmentation and description evaluations share: the weights banner and writing a report
as JSON and Markdown."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

TEST_WEIGHTS = (
    "TEST WEIGHTS, NOT A RESULT: {reasons}. Random weights see nothing: these figures show that the pipeline "
    "runs, not how well the method works; evaluate with real weights for meaningful numbers."
)


def weights_banner(warnings: list[str]) -> str | None:
    """The banner shown first when any model has test weights."""
    return TEST_WEIGHTS.format(reasons="; ".join(warnings)) if warnings else None


def write_task_report(report: BaseModel, markdown: str, out_dir: Path, stem: str) -> dict[str, Path]:
    """`<stem>.json` (every figure) and `<stem>.md` (the table) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    paths["json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown, encoding="utf-8")
    return paths
