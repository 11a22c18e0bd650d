"""Section `add`: `add_images` throughput against pure encoding of the same images; the store's overhead."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from rar_tools.api import RarTools
from rar_tools.bench.context import BenchContext
from rar_tools.bench.data import PHOTO_SIZE, unit_rows
from rar_tools.bench.report import SectionResult, Table, Target
from rar_tools.bench.timing import time_rounds, timed
from rar_tools.images import LoadedImage
from rar_tools.memory import MemoryStore, NewEntry
from rar_tools.memory.files import store_image

log = logging.getLogger(__name__)
IMAGES_PER_CALL = 64  # the most one add_to_memory call takes
ROUNDS = 4
MAX_OVERHEAD_PERCENT = 15.0


def add_all(tools: RarTools, memory: str, paths: list[str], label: str) -> None:
    """Add `paths` in calls of at most IMAGES_PER_CALL images."""
    for start in range(0, len(paths), IMAGES_PER_CALL):
        tools.add_images(memory, paths[start : start + IMAGES_PER_CALL], label=label)


def encode_and_add(tools: RarTools, paths: list[str], device: str) -> tuple[float, float]:
    """Seconds to encode the (already decoded) images, and to add the image files to a memory.

    In ROUNDS rounds over interleaved shares of the images, alternating which step goes first."""
    shares = [paths[index::ROUNDS] for index in range(ROUNDS)]
    decoded = [[tools.load(p).image for p in share] for share in shares]
    calls = {
        "encode": lambda index: tools.encoder.encode_images(decoded[index]),
        "add": lambda index: add_all(tools, "bench-add", shares[index], f"label {index}"),
    }
    seconds = time_rounds(calls, ROUNDS, device)
    return sum(seconds["encode"]), sum(seconds["add"])


def stage_seconds(tools: RarTools, paths: list[str], device: str) -> dict[str, float]:
    """Each non-encoding stage of an add, timed alone on the same images: read + hash + decode, the
    exemplar JPEG copy, and the Chroma write (in a separate store; the vectors' values cost nothing)."""
    embeddings = unit_rows(np.random.default_rng(0).normal(size=(len(paths), tools.encoder.dim)))
    load_s, loaded = timed(lambda: [tools.load(p) for p in paths], device)
    side = tools.settings.stored_image_side
    with tempfile.TemporaryDirectory() as tmp:
        copy_s = timed(lambda: [store_image(Path(tmp), item, side) for item in loaded], device)[0]
        store = MemoryStore(Path(tmp) / "store")
        entries = [image_entry(item, embedding) for item, embedding in zip(loaded, embeddings)]
        chroma_s = timed(lambda: store.add("stages", tools.encoder.identity, entries), device)[0]
        store.close()
    return {"load_s": load_s, "copy_s": copy_s, "chroma_s": chroma_s}


def image_entry(item: LoadedImage, embedding: np.ndarray) -> NewEntry:
    return NewEntry(label="stages", kind="image", sha256=item.sha256, embedding=embedding, source=item.source_path)


def run(ctx: BenchContext) -> SectionResult:
    tools, device, count = ctx.tools, ctx.device, ctx.config.add_images
    paths = ctx.photos(count, seed=2)
    tools.encoder.encode_images([tools.load(paths[0]).image])  # warm-up
    tools.store.names()  # opening the database is a start-up cost, not one per image
    log.info("add: encoding %d images and adding them, in %d alternating rounds", count, ROUNDS)
    encode_s, add_s = encode_and_add(tools, paths, device)
    stages = stage_seconds(tools, paths, device)
    overhead = 100.0 * (add_s - encode_s) / encode_s
    by_stages = 100.0 * sum(stages.values()) / encode_s
    figures = {
        "images": count,
        "images_per_call": IMAGES_PER_CALL,
        "encoder_batch_size": tools.encoder.batch_size,
        "encode_s": encode_s,
        "rounds": ROUNDS,
        "add_s": add_s,
        "encode_images_per_s": count / encode_s,
        "add_images_per_s": count / add_s,
        "overhead_percent": overhead,
        "stages_s": stages,
        "overhead_percent_from_stages": by_stages,
    }
    per_image = [
        ["encode (images decoded already)", f"{encode_s:.2f}", f"{1000 * encode_s / count:.1f}"],
        ["add_images, end to end", f"{add_s:.2f}", f"{1000 * add_s / count:.1f}"],
        *[[f"  stage alone: {name[:-2]}", f"{s:.3f}", f"{1000 * s / count:.2f}"] for name, s in stages.items()],
    ]
    tables = [
        Table(
            f"{count} images of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, {ROUNDS} rounds, encoder batch "
            f"{tools.encoder.batch_size}",
            ["step", "total s", "ms/image"],
            per_image,
        ),
        Table(
            "store overhead (add time beyond encoding, % of encoding time)",
            ["measured as", "overhead %"],
            [["add - encode", f"{overhead:.1f}"], ["sum of stages alone", f"{by_stages:.1f}"]],
        ),
    ]
    targets = [Target("store overhead on add", overhead, MAX_OVERHEAD_PERCENT, False, "%")]
    return SectionResult("add", tables, figures, targets)
