"""Section `encode`: CLIP images per second one at a time and batched, on the same images; label texts per second."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from rar_tools.bench.context import BenchContext
from rar_tools.bench.report import SectionResult, Table, Target
from rar_tools.bench.timing import gpu_peak_bytes, reset_gpu_peak, timed
from rar_tools.encoder import ClipEncoder
from rar_tools.images import load_image
from rar_tools.testing.tiny_mllm import NAMES

log = logging.getLogger(__name__)
BATCHED_SPEEDUP = 2.0


@contextmanager
def batch_size(encoder: ClipEncoder, size: int) -> Iterator[None]:
    """The encoder with another batch size for the duration."""
    previous, encoder.batch_size = encoder.batch_size, size
    try:
        yield
    finally:
        encoder.batch_size = previous


def images_per_second(encoder: ClipEncoder, images: list[Image.Image], size: int, device: str) -> float:
    """Throughput over `images`: one call per image at size 1, else one call with batches of `size`."""
    with batch_size(encoder, size):
        encoder.encode_images(images[: min(size, 2)])  # warm-up
        if size == 1:
            seconds = sum(timed(lambda im=im: encoder.encode_images([im]), device)[0] for im in images)
        else:
            seconds = timed(lambda: encoder.encode_images(images), device)[0]
    return len(images) / seconds


def label_texts(count: int) -> list[str]:
    """`count` distinct label names."""
    return [NAMES[i % len(NAMES)] + (f" {i // len(NAMES)}" if i >= len(NAMES) else "") for i in range(count)]


def run(ctx: BenchContext) -> SectionResult:
    config, device = ctx.config, ctx.device
    encoder = ctx.tools.encoder
    reset_gpu_peak(device)
    images = [load_image(path).image for path in ctx.photos(config.encode_images, seed=1)]
    rates = {}
    for size in config.batch_sizes:
        log.info("encode: %d images at batch %d", len(images), size)
        rates[size] = images_per_second(encoder, images, size, device)
    labels = label_texts(config.text_labels)
    encoder.encode_labels(labels[:2])
    text_s = timed(lambda: encoder.encode_labels(labels), device)[0]
    single = rates.get(1)
    largest = max(config.batch_sizes)
    rows = [
        [str(size), f"{rate:.2f}", f"{1000 / rate:.1f}", f"{rate / single:.2f}" if single else "-"]
        for size, rate in rates.items()
    ]
    figures = {
        "images": len(images),
        "image_size": list(images[0].size),
        "images_per_s": {str(size): rate for size, rate in rates.items()},
        "speedup_vs_one_at_a_time": {str(s): r / single for s, r in rates.items()} if single else None,
        "text_labels": len(labels),
        "text_labels_per_s": len(labels) / text_s,
        "text_batch_size": encoder.batch_size,
        "dtype": str(encoder.dtype),
        "gpu_peak_bytes": gpu_peak_bytes(device),
    }
    targets = []
    if single and largest > 1:
        targets.append(
            Target(f"batched (batch {largest}) / one at a time", rates[largest] / single, BATCHED_SPEEDUP, True, "x")
        )
    tables = [
        Table(
            f"CLIP {encoder.identity.describe()} on {device} ({encoder.dtype}), {len(images)} images of "
            f"{images[0].size[0]}x{images[0].size[1]}",
            ["batch", "images/s", "ms/image", "vs batch 1"],
            rows,
        ),
        Table("label texts", ["labels", "labels/s"], [[str(len(labels)), f"{len(labels) / text_s:.1f}"]]),
    ]
    return SectionResult("encode", tables, figures, targets)
