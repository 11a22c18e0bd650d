"""Section `encode`: CLIP images per second one at a time and batched, on the same images; label texts per second."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from PIL import Image

from rar_tools.bench.context import BenchContext
from rar_tools.bench.data import LABEL_NAMES
from rar_tools.bench.report import SectionResult, Table, Target
from rar_tools.bench.timing import gpu_peak_bytes, reset_gpu_peak, time_rounds, timed
from rar_tools.encoder import ClipEncoder
from rar_tools.images import load_image

log = logging.getLogger(__name__)
BATCHED_SPEEDUP = 2.0
ROUNDS = 4


@contextmanager
def batch_size(encoder: ClipEncoder, size: int) -> Iterator[None]:
    """The encoder with another batch size for the duration."""
    previous, encoder.batch_size = encoder.batch_size, size
    try:
        yield
    finally:
        encoder.batch_size = previous


def encode_round(encoder: ClipEncoder, images: list[Image.Image], size: int) -> Callable[[int], None]:
    """A call that encodes one round's share of `images`: one call per image at size 1, else one
    call in batches of `size`."""

    def call(index: int) -> None:
        share = images[index::ROUNDS]
        with batch_size(encoder, size):
            if size == 1:
                for image in share:
                    encoder.encode_images([image])
            else:
                encoder.encode_images(share)

    return call


def label_texts(count: int) -> list[str]:
    """`count` distinct label names."""
    n = len(LABEL_NAMES)
    return [LABEL_NAMES[i % n] + (f" {i // n}" if i >= n else "") for i in range(count)]


def run(ctx: BenchContext) -> SectionResult:
    config, device = ctx.config, ctx.device
    encoder = ctx.tools.encoder
    reset_gpu_peak(device)
    images = [load_image(path).image for path in ctx.photos(config.encode_images, seed=1)]
    calls = {}
    for size in config.batch_sizes:
        with batch_size(encoder, size):
            encoder.encode_images(images[: min(size, 4)])  # warm-up
        calls[size] = encode_round(encoder, images, size)
    log.info("encode: %d images at batch sizes %s, %d rounds", len(images), config.batch_sizes, ROUNDS)
    seconds = time_rounds(calls, ROUNDS, device)
    rates = {size: len(images) / sum(seconds[size]) for size in config.batch_sizes}
    labels = label_texts(config.text_labels)
    encoder.encode_labels(labels[:2])
    text_s = timed(lambda: encoder.encode_labels(labels), device)[0]
    single = rates.get(1)
    best = max((size for size in rates if size > 1), key=rates.get, default=None)
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
    if single and best:
        targets.append(
            Target(f"batched (best: batch {best}) / one at a time", rates[best] / single, BATCHED_SPEEDUP, True, "x")
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
