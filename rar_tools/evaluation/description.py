"""`rar-tools eval --task describe`: how often `describe_regions` answers in the requested format.

The data: the images of `DATASET/images/` (or of `DATASET/` itself), each described as one region (the
whole image) unless `DATASET/boxes.json` maps its file name to a list of boxes in pixels. Reported: the
share of regions per fallback (none: all read from the requested JSON; partial; full), the share in
which a caption, attributes and a label were found at all, and seconds per region.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from rar_tools.evaluation.datasets import DatasetError
from rar_tools.evaluation.report import versions
from rar_tools.evaluation.task_report import weights_banner, write_task_report
from rar_tools.evaluation.weights import ranker_warnings
from rar_tools.images import IMAGE_SUFFIXES
from rar_tools.jsontext import parse_json

if TYPE_CHECKING:
    from rar_tools.api import RarTools

REPORT_STEM = "report-describe"
BOXES_FILE = "boxes.json"
PARTS = ("caption", "attributes", "label")


class DescriptionReport(BaseModel):
    title: str
    warning: str | None = Field(None, description="present when the MLLM has test weights")
    describer: str
    views: int
    images: int
    regions: int
    fallback_rates: dict[str, float] = Field(description="share of regions per fallback: none, partial, full")
    found_rates: dict[str, float] = Field(description="share of regions in which each part was found at all")
    seconds_per_region: float
    max_new_tokens: int
    versions: dict[str, str]


def described_images(root: Path) -> list[tuple[Path, list[list[float]] | None]]:
    """Each image with its boxes from `boxes.json` (None: the whole image)."""
    folder = root / "images" if (root / "images").is_dir() else root
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not images:
        raise DatasetError(f"{root}: no images in {folder}")
    boxes = {}
    if (root / BOXES_FILE).is_file():
        try:
            boxes = parse_json((root / BOXES_FILE).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DatasetError(f"{root / BOXES_FILE} is not JSON: {exc}") from exc
        if not isinstance(boxes, dict):
            raise DatasetError(f"{root / BOXES_FILE} must map image file names to lists of boxes")
    return [(path, boxes.get(path.name)) for path in images]


def evaluate_descriptions(
    tools: RarTools, root: Path, out_dir: Path, views: int = 2, limit: int | None = None
) -> tuple[DescriptionReport, dict[str, Path]]:
    """Describe every region, count fallbacks and parts found, write the report."""
    from PIL import Image

    items = described_images(Path(root))[:limit]
    fallbacks = {"none": 0, "partial": 0, "full": 0}
    found = dict.fromkeys(PARTS, 0)
    describer, started = "", time.perf_counter()
    for path, boxes in items:
        if boxes is None:
            with Image.open(path) as image:
                boxes = [[0, 0, image.width, image.height]]
        result = tools.describe_regions(str(path.absolute()), boxes, views=views)
        describer = result.describer
        for region in result.regions:
            fallbacks[region.fallback] += 1
            for part in PARTS:
                found[part] += part not in region.missing
    regions = sum(fallbacks.values())
    report = DescriptionReport(
        title=f"describe_regions on {Path(root).name}",
        warning=weights_banner(ranker_warnings(tools.settings)),
        describer=describer,
        views=views,
        images=len(items),
        regions=regions,
        fallback_rates={name: count / max(1, regions) for name, count in fallbacks.items()},
        found_rates={name: count / max(1, regions) for name, count in found.items()},
        seconds_per_region=(time.perf_counter() - started) / max(1, regions),
        max_new_tokens=tools.settings.describe_max_new_tokens,
        versions=versions(),
    )
    return report, write_task_report(report, description_markdown(report), Path(out_dir), REPORT_STEM)


def description_markdown(report: DescriptionReport) -> str:
    """The report as Markdown, the banner first."""
    lines = [f"# {report.title}", ""]
    if report.warning:
        lines += [f"**{report.warning}**", ""]
    lines += [f"{report.regions} regions of {report.images} images, {report.views} view(s), {report.describer}", ""]
    lines += ["| | share (%) |", "|---|---:|"]
    lines += [f"| fallback {name} | {100 * rate:.1f} |" for name, rate in report.fallback_rates.items()]
    lines += [f"| {name} found | {100 * rate:.1f} |" for name, rate in report.found_rates.items()]
    lines += ["", f"{report.seconds_per_region:.2f} s per region (at most {report.max_new_tokens} new tokens)"]
    return "\n".join(lines) + "\n"
