"""Section `segment`: `segment` time per image against the number of labels (1, 10, 100 by default), and
the rounds the recurrence took to converge. Each label costs one Grad-CAM backward pass and three image
encodings per round it stays in, so the time grows with the labels and the rounds."""

from __future__ import annotations

import logging
import statistics

from rar_tools.bench.context import BenchContext
from rar_tools.bench.data import LABEL_NAMES
from rar_tools.bench.report import SectionResult, Table
from rar_tools.bench.timing import summarise, timed
from rar_tools.errors import RarToolsError

log = logging.getLogger(__name__)


def run(ctx: BenchContext) -> SectionResult:
    config, tools = ctx.config, ctx.tools
    photos = ctx.photos(config.segment_images, seed=5)
    tools.segment(photos[0], list(LABEL_NAMES[:1]))  # warm-up: loads CLIP, first Grad-CAM pass
    rows, by_labels = [], {}
    for count in config.segment_labels:
        if count > len(LABEL_NAMES):
            raise RarToolsError(f"{count} labels: the segment benchmark has {len(LABEL_NAMES)} label names")
        labels = list(LABEL_NAMES[:count])
        log.info("segment: %d label(s), %d image(s)", count, len(photos))
        seconds, rounds, kept = [], [], []
        for photo in photos:
            spent, result = timed(lambda photo=photo, labels=labels: tools.segment(photo, labels), ctx.device)
            seconds.append(spent)
            rounds.append(result.regions[0].rounds)
            kept.append(len(result.regions[0].masks))
        per_image = summarise(seconds)
        by_labels[str(count)] = {
            "per_image": per_image,
            "rounds": rounds,
            "rounds_mean": statistics.fmean(rounds),
            "labels_kept_mean": statistics.fmean(kept),
        }
        rows.append(
            [
                str(count),
                f"{per_image['p50_ms'] / 1000:.2f}",
                f"{per_image['min_ms'] / 1000:.2f}",
                f"{statistics.fmean(rounds):.1f}",
                f"{statistics.fmean(kept):.1f}",
            ]
        )
    title = f"segment on {ctx.device}, {tools.encoder.identity.describe()}, seconds per image ({len(photos)} images)"
    table = Table(title, ["labels", "p50 s", "min s", "rounds", "labels kept"], rows)
    return SectionResult("segment", [table], {"images": len(photos), "by_labels": by_labels})
