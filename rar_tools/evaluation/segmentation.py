"""`rar-tools eval --task segment`: mean IoU of `segment` on images with ground-truth masks.

The data: `DATASET/images/<name>.<ext>` and, per image, `DATASET/masks/<name>/<label>.png`, white (above
127) where the label is; a label's name is its file name with `_` as spaces. Every image is segmented
for every label of the data set (at most 100). Per label, intersections and unions are summed over all
images (an image without that label's mask counts as an empty truth, so a mask there is a false
positive); IoU = intersection / union, and mIoU is the mean over the labels with a non-empty union.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from rar_tools.evaluation.datasets import DatasetError
from rar_tools.evaluation.report import versions
from rar_tools.evaluation.task_report import weights_banner, write_task_report
from rar_tools.evaluation.weights import clip_warnings
from rar_tools.images import IMAGE_SUFFIXES
from rar_tools.limits import MAX_SEGMENT_LABELS

if TYPE_CHECKING:
    from rar_tools.api import RarTools

REPORT_STEM = "report-segment"


@dataclass(frozen=True)
class MaskedImage:
    """An image and its ground-truth mask files by label."""

    image: Path
    masks: dict[str, Path]


class LabelIoU(BaseModel):
    label: str
    iou: float | None = Field(description="intersection / union over all images; None when both are empty")
    intersection: int
    union: int


class SegmentationReport(BaseModel):
    title: str
    warning: str | None = Field(None, description="present when CLIP has test weights")
    clip: str
    images: int
    labels: list[str]
    per_label: list[LabelIoU]
    mean_iou: float | None = Field(description="mean IoU over the labels with a non-empty union")
    seconds_per_image: float
    settings: dict[str, object]
    versions: dict[str, str]


def masked_images(root: Path) -> list[MaskedImage]:
    """The images of a segmentation set with their mask files (see the module docstring)."""
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise DatasetError(f"{root}: a segmentation set holds images/<name>.<ext> and masks/<name>/<label>.png")
    found = []
    for path in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        folder = masks / path.stem
        files = sorted(folder.glob("*.png")) if folder.is_dir() else []
        found.append(MaskedImage(path, {file.stem.replace("_", " "): file for file in files}))
    if not any(item.masks for item in found):
        raise DatasetError(f"{root}: no mask files under masks/<name>/<label>.png for the images in images/")
    return found


def read_truth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask file as booleans; it must have the image's size."""
    with Image.open(path) as mask:
        if mask.size != size:
            raise DatasetError(f"mask {path} is {mask.size[0]}x{mask.size[1]}, its image {size[0]}x{size[1]}")
        return np.asarray(mask.convert("L")) > 127


def predicted_masks(result, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Each label's predicted mask (the union over the result's regions)."""
    from rar_tools.segmentation import rle

    masks: dict[str, np.ndarray] = {}
    for region in result.regions:
        for mask in region.masks:
            pixels = rle.decode(mask.rle.model_dump())
            masks[mask.label] = masks.get(mask.label, np.zeros((size[1], size[0]), bool)) | pixels
    return masks


def evaluate_segmentation(
    tools: RarTools, root: Path, out_dir: Path, limit: int | None = None
) -> tuple[SegmentationReport, dict[str, Path]]:
    """Segment every image for every label, sum intersections and unions per label, write the report."""
    items = masked_images(Path(root))[:limit]
    labels = sorted({label for item in items for label in item.masks})
    if len(labels) > MAX_SEGMENT_LABELS:
        raise DatasetError(f"{root}: {len(labels)} labels; segment looks for at most {MAX_SEGMENT_LABELS} at once")
    totals = {label: [0, 0] for label in labels}
    started = time.perf_counter()
    for item in items:
        result = tools.segment(str(item.image.absolute()), labels)
        size = (result.image_size[0], result.image_size[1])
        predicted = predicted_masks(result, size)
        empty = np.zeros((size[1], size[0]), bool)
        for label in labels:
            truth = read_truth(item.masks[label], size) if label in item.masks else empty
            guess = predicted.get(label, empty)
            totals[label][0] += int((truth & guess).sum())
            totals[label][1] += int((truth | guess).sum())
    seconds = (time.perf_counter() - started) / max(1, len(items))
    report = segmentation_report(tools, root, len(items), labels, totals, seconds)
    return report, write_task_report(report, segmentation_markdown(report), Path(out_dir), REPORT_STEM)


def segmentation_report(
    tools: RarTools, root: Path, images: int, labels: list[str], totals: dict[str, list[int]], seconds: float
) -> SegmentationReport:
    per_label = [
        LabelIoU(label=label, iou=inter / union if union else None, intersection=inter, union=union)
        for label, (inter, union) in totals.items()
    ]
    scored = [row.iou for row in per_label if row.iou is not None]
    s = tools.settings
    return SegmentationReport(
        title=f"segment on {Path(root).name}",
        warning=weights_banner(clip_warnings(s, tools.encoder.identity)),
        clip=tools.encoder.identity.describe(),
        images=images,
        labels=labels,
        per_label=per_label,
        mean_iou=sum(scored) / len(scored) if scored else None,
        seconds_per_image=seconds,
        settings={name: value for name, value in s.model_dump(mode="json").items() if name.startswith("segment_")},
        versions=versions(),
    )


def segmentation_markdown(report: SegmentationReport) -> str:
    """The report as a Markdown table, the banner first."""
    lines = [f"# {report.title}", ""]
    if report.warning:
        lines += [f"**{report.warning}**", ""]
    mean = "–" if report.mean_iou is None else f"{100 * report.mean_iou:.1f}"
    lines += [f"{report.images} images, {len(report.labels)} labels, CLIP {report.clip}; mIoU **{mean}**", ""]
    lines += ["| label | IoU (%) | intersection | union |", "|---|---:|---:|---:|"]
    for row in report.per_label:
        iou = "–" if row.iou is None else f"{100 * row.iou:.1f}"
        lines.append(f"| {row.label} | {iou} | {row.intersection} | {row.union} |")
    lines += ["", f"{report.seconds_per_image:.2f} s per image"]
    return "\n".join(lines) + "\n"
