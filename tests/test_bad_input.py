"""Bad input through the MCP tools: an error result that names the problem, the server keeps
serving, and the memory is unchanged (counts, labels and exemplar files compared before/after).

One server configuration throughout, as recommended for desktop use: image paths limited to one
folder (`--allow-dir`), a small byte limit so that "too big" is cheap to build.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.server import create_server
from rar_tools.settings import Settings

pytestmark = pytest.mark.anyio
BYTE_LIMIT = 64 * 1024
INPUTS = "{inputs}"  # stands for the folder of prepared files in the tables below


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(size: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def frames(fmt: str, colours: list[tuple[int, int, int]]) -> bytes:
    """A multi-frame GIF or multi-page TIFF, one solid colour per frame."""
    images = [Image.new("RGB", (8, 8), colour) for colour in colours]
    return encoded(images[0], fmt, save_all=True, append_images=images[1:])


BAD_FILES: dict[str, bytes] = {
    "good.png": encoded(Image.new("RGB", (20, 16), (220, 30, 30)), "PNG"),
    "notes.png": b"just some text, not pixels\n" * 10,
    "cut.jpg": encoded(noise(64), "JPEG")[:400],
    "zero.png": b"",
    "big.png": encoded(noise(200, seed=1), "PNG"),
}

# Unusual but valid: (bytes, the RGB colour the stored copy must show)
ODD_FILES: dict[str, tuple[bytes, tuple[int, int, int]]] = {
    "one-pixel.png": (encoded(Image.new("RGB", (1, 1), (220, 30, 30)), "PNG"), (220, 30, 30)),
    "animated.gif": (frames("GIF", [(250, 0, 0), (0, 0, 250)]), (250, 0, 0)),
    "pages.tiff": (frames("TIFF", [(40, 200, 40), (0, 0, 250)]), (40, 200, 40)),
    "cmyk.jpg": (encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), (255, 0, 0)),
    "grey16.png": (encoded(Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)), "PNG"), (255, 255, 255)),
    "palette.png": (
        encoded(Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        (10, 200, 30),
    ),
    "transparent.png": (encoded(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), (255, 255, 255)),
    "grey-alpha.png": (encoded(Image.new("LA", (8, 8), (0, 0)), "PNG"), (255, 255, 255)),
    "float-0-to-1.tiff": (encoded(Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), "F"), "TIFF"), (128,) * 3),
}


@dataclass
class Served:
    """The shared server's tools, its prepared input folder, and a mode-000 file in a second
    allowed folder that every user may traverse."""

    tools: RarTools
    inputs: Path
    unreadable: Path

    def fill(self, value: Any) -> Any:
        """`value` with the `{inputs}` placeholder replaced by the real folder, recursively."""
        if isinstance(value, str):
            return value.replace(INPUTS, str(self.inputs))
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, clip_model: str, decompression_bomb: bytes) -> Iterator[Served]:
    """Tools limited to `inputs/`, with memory `m` holding one exemplar image and two label texts."""
    root = tmp_path_factory.mktemp("bad-input")
    inputs, outside = root / "inputs", root / "outside"
    (inputs / "folder").mkdir(parents=True)
    outside.mkdir()
    for name, data in BAD_FILES.items():
        (inputs / name).write_bytes(data)
    for name, (data, _) in ODD_FILES.items():
        (inputs / name).write_bytes(data)
    (inputs / "bomb.png").write_bytes(decompression_bomb)
    (outside / "elsewhere.png").write_bytes(BAD_FILES["good.png"])
    (inputs / "escape.png").symlink_to(outside / "elsewhere.png")
    assert len(BAD_FILES["big.png"]) > BYTE_LIMIT
    shared = Path(tempfile.mkdtemp(prefix="rar-unreadable-"))  # in /tmp, so `nobody` can reach the file
    shared.chmod(0o755)
    unreadable = shared / "unreadable.png"
    unreadable.write_bytes(BAD_FILES["good.png"])
    unreadable.chmod(0)
    settings = Settings(
        data_dir=root / "data",
        clip_model=clip_model,
        no_ranker=True,
        max_image_bytes=BYTE_LIMIT,
        allow_dir=[inputs, shared],
    )
    tools = RarTools(settings)
    tools.add_images("m", [str(inputs / "good.png")], "seed")
    tools.add_labels("m", ["green", "blue"])
    yield Served(tools, inputs, unreadable)
    tools.close()
    shutil.rmtree(shared)


async def snapshot(client: Client, tools: RarTools) -> tuple[dict, list[str]]:
    """Every memory's count and per-label counts, and the stored exemplar files."""
    listing = await client.call_tool("list_memories", {"max_labels": 10000})
    assert not listing.is_error
    memories = {m["name"]: (m["count"], m["labels"]) for m in listing.structured_content["memories"]}
    files = sorted(str(p.relative_to(tools.store.images_dir)) for p in tools.store.images_dir.rglob("*"))
    return memories, files


async def assert_refused_without_change(
    served: Served, name: str, arguments: dict, expected: str, as_user: Callable = nullcontext
) -> None:
    """Call `name` (within `as_user()`): an error naming the problem; nothing changed; a good
    call still works."""
    async with Client(create_server(served.tools)) as client:
        before = await snapshot(client, served.tools)
        with as_user():
            result = await client.call_tool(name, served.fill(arguments))
        after = await snapshot(client, served.tools)
        good = await client.call_tool("retrieve_candidates", {"memory": "m", "image": f"{served.inputs}/good.png"})
    text = result.content[0].text
    assert result.is_error and text.startswith(f"Error executing tool {name}: ")  # ours, not a crash
    assert expected in text, text
    assert after == before
    assert not good.is_error and good.structured_content["candidates"]


@contextmanager
def as_nobody() -> Iterator[None]:
    """Run as `nobody` while root (root reads even mode-000 files); as is otherwise."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


# Image arguments that must be refused, each tried with add_to_memory and retrieve_candidates.
BAD_IMAGES: dict[str, tuple[str, str]] = {
    "missing-file": (f"{INPUTS}/no-such.png", "does not exist"),
    "directory": (f"{INPUTS}/folder", "is not a file: it is a folder"),
    "non-image-file": (f"{INPUTS}/notes.png", "not an image format Pillow can decode"),
    "truncated-jpeg": (f"{INPUTS}/cut.jpg", "damaged or truncated"),
    "decompression-bomb": (f"{INPUTS}/bomb.png", "too large to decode safely"),
    "zero-byte-file": (f"{INPUTS}/zero.png", "is empty (0 bytes)"),
    "file-over-byte-limit": (f"{INPUTS}/big.png", f"the limit is {BYTE_LIMIT}"),
    "base64-over-byte-limit": (base64.b64encode(BAD_FILES["big.png"]).decode(), f"over the limit of {BYTE_LIMIT}"),
    "not-base64": ("data:image/png;base64,@@@ not base64 @@@", "not valid base64"),
    "base64-of-text": (base64.b64encode(b"plain words, no pixels at all").decode(), "not an image format"),
    "data-url-wrong-type": ("data:text/plain;base64,aGVsbG8gd29ybGQ=", "only image/* data URLs"),
    "relative-path": ("inputs/good.png", "neither an absolute file path"),
    "blank": ("   ", "image is empty"),
    "empty-string": ("", "at least 1 character"),
    "url-not-allowed": ("http://127.0.0.1:9/bird.png", "--allow-urls"),
    "outside-allowed-folder": (f"{INPUTS}/../outside/elsewhere.png", "outside the folders this server may read"),
    "symlink-out-of-allowed-folder": (f"{INPUTS}/escape.png", "outside the folders this server may read"),
    "nul-in-path": (f"{INPUTS}/go\x00od.png", "contains a NUL character"),
    "unknown-user-home": ("~no-such-user-here/x.png", "cannot be expanded"),
    "over-long-path": (f"{INPUTS}/{'a' * 5000}.png", "cannot be read: File name too long"),
}


def image_calls(image: str) -> dict[str, dict]:
    return {
        "add_to_memory": {"memory": "m", "label": "new", "images": [image]},
        "retrieve_candidates": {"memory": "m", "image": image},
    }


GOOD = f"{INPUTS}/good.png"
CHROMA_REJECTS = ["-bad", "bad-", "a..b", "ab\n", "x" * 65, "ümlaut", "a/b", "a b", "", "rar-" + "x" * 600]

# Other arguments that must be refused: (tool, arguments, what the message says).
BAD_ARGUMENTS: dict[str, tuple[str, dict, str]] = {
    "k-zero": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "k": 0},
        "k must be an integer from 1 to 50, got 0",
    ),
    "k-above-limit": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "k": 51},
        "k must be an integer from 1 to 50, got 51",
    ),
    "k-not-a-number": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "k": "five"},
        "k must be an integer from 1 to 50, got 'five'",
    ),
    "k-true": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "k": True},
        "k must be an integer from 1 to 50, got True",
    ),
    "k-numeric-string": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "k": "3"},
        "k must be an integer from 1 to 50, got '3'",
    ),
    "views-true": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "views": True},
        "views must be an integer from 1",
    ),
    "box-coordinate-false": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "box": [False, 0, 5, 5]},
        "got the boolean false",
    ),
    "box-normalized-yes": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "box_normalized": "yes"},
        "expected true or false, got 'yes'",
    ),
    "thumbnails-one": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "thumbnails": 1},
        "expected true or false, got 1",
    ),
    "max-labels-true": (
        "list_memories",
        {"max_labels": True},
        "max_labels must be an integer from 0 to 10000, got True",
    ),
    "unknown-memory": ("retrieve_candidates", {"memory": "nope", "image": GOOD}, "memory 'nope' does not exist"),
    "unknown-mode": ("retrieve_candidates", {"memory": "m", "image": GOOD, "mode": "both"}, "'auto', 'image' or"),
    **{
        f"memory-name-{i}": ("add_to_memory", {"memory": name, "labels": ["x"]}, "is invalid: use 1-64 letters")
        for i, name in enumerate(CHROMA_REJECTS)
    },
    "memory-name-retrieve": ("retrieve_candidates", {"memory": "a..b", "image": GOOD}, "is invalid: use 1-64"),
    "memory-name-remove": ("remove_from_memory", {"memory": "-x", "label": "seed"}, "is invalid: use 1-64"),
    "label-empty": ("add_to_memory", {"memory": "m", "labels": [""]}, "label is empty"),
    "label-whitespace": ("add_to_memory", {"memory": "m", "labels": [" \t "]}, "label is empty"),
    "label-10kB": ("add_to_memory", {"memory": "m", "labels": ["x" * 10_000]}, "the limit is 200"),
    "label-control-chars": ("add_to_memory", {"memory": "m", "labels": ["red\x00\x1b[31m"]}, "control characters"),
    "label-zero-width-only": ("add_to_memory", {"memory": "m", "labels": ["\u200b\u200d"]}, "no visible character"),
    "image-label-filler-only": (
        "add_to_memory",
        {"memory": "m", "label": "\u3164", "images": [GOOD]},
        "no visible character",
    ),
    "candidate-invisible": ("rank_candidates", {"image": GOOD, "candidates": ["a", "\ufeff"]}, "no visible char"),
    "one-bad-label-of-three": ("add_to_memory", {"memory": "m", "labels": ["a", "b\x07", "c"]}, "control characters"),
    "image-label-10kB": ("add_to_memory", {"memory": "m", "label": "y" * 10_000, "images": [GOOD]}, "at most 200"),
    "image-label-whitespace": ("add_to_memory", {"memory": "m", "label": "\n\n", "images": [GOOD]}, "is empty"),
    "image-label-control": ("add_to_memory", {"memory": "m", "label": "a\x7fb", "images": [GOOD]}, "control char"),
    "category-control": ("add_to_memory", {"memory": "m", "labels": ["q"], "category": "c\x01"}, "control char"),
    "too-many-labels": ("add_to_memory", {"memory": "m", "labels": [f"l{i}" for i in range(1001)]}, "at most 1000"),
    "too-many-images": ("add_to_memory", {"memory": "m", "label": "x", "images": [GOOD] * 65}, "at most 64 items"),
    "images-not-a-list": ("add_to_memory", {"memory": "m", "label": "x", "images": GOOD}, "valid list"),
    "one-bad-image-of-two": (
        "add_to_memory",
        {"memory": "m", "label": "new", "images": [GOOD, f"{INPUTS}/no-such.png"]},
        "does not exist",
    ),
    "images-and-labels": (
        "add_to_memory",
        {"memory": "m", "label": "x", "images": [GOOD], "labels": ["x"]},
        "not both",
    ),
    "neither-images-nor-labels": ("add_to_memory", {"memory": "m"}, "give either `images`"),
    "images-without-label": ("add_to_memory", {"memory": "m", "images": [GOOD]}, "`label` is required"),
    "duplicate-candidates": ("rank_candidates", {"image": GOOD, "candidates": ["a", "b", " a "]}, "duplicate"),
    "one-candidate": ("rank_candidates", {"image": GOOD, "candidates": ["a"]}, "give 2 to 50 candidates"),
    "10000-candidates": (
        "rank_candidates",
        {"image": GOOD, "candidates": [f"c{i}" for i in range(10_000)]},
        "give 2 to 50 candidates to rank, got 10000",
    ),
    "candidate-control-chars": ("rank_candidates", {"image": GOOD, "candidates": ["a", "b\x00"]}, "control characters"),
    "candidate-whitespace": ("rank_candidates", {"image": GOOD, "candidates": ["a", "   "]}, "candidate is empty"),
    "remove-nothing": ("remove_from_memory", {"memory": "m"}, "say what to remove"),
    "remove-unknown-memory": ("remove_from_memory", {"memory": "nope", "label": "seed"}, "does not exist"),
    "box-outside-image": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "box": [100, 100, 120, 120]},
        "lies outside the 20x16 image",
    ),
    "box-zero-area": ("retrieve_candidates", {"memory": "m", "image": GOOD, "box": [5, 5, 5, 10]}, "has no area"),
    "box-too-small": ("add_to_memory", {"memory": "m", "label": "x", "images": [GOOD], "box": [0, 0, 2, 2]}, "side"),
    "box-three-numbers": ("add_to_memory", {"memory": "m", "label": "x", "images": [GOOD], "box": [1, 2, 3]}, "box"),
    "box-normalized-above-one": (
        "retrieve_candidates",
        {"memory": "m", "image": GOOD, "box": [0, 0, 2, 1], "box_normalized": True},
        "within 0..1",
    ),
    "no-boxes": (
        "recognize_regions",
        {"memory": "m", "image": GOOD, "boxes": []},
        "give a list of 1 to 100 boxes, got []",
    ),
    "max-labels-negative": (
        "list_memories",
        {"max_labels": -1},
        "max_labels must be an integer from 0 to 10000, got -1",
    ),
    "unknown-argument-type": ("list_memories", {"max_labels": [1]}, "max_labels must be an integer from 0 to 10000"),
}

CASES = [
    pytest.param(tool, arguments, expected, id=f"{tool}:{case}")
    for case, (image, expected) in BAD_IMAGES.items()
    for tool, arguments in image_calls(image).items()
] + [pytest.param(*case, id=name) for name, case in BAD_ARGUMENTS.items()]


@pytest.mark.parametrize("name, arguments, expected", CASES)
async def test_bad_input_is_refused_by_name_and_changes_nothing(served: Served, name, arguments, expected) -> None:
    await assert_refused_without_change(served, name, arguments, expected)


@pytest.mark.parametrize("name", ["add_to_memory", "retrieve_candidates"])
async def test_an_unreadable_file_is_refused_by_name_and_changes_nothing(served: Served, name: str) -> None:
    arguments = image_calls(str(served.unreadable))[name]
    await assert_refused_without_change(served, name, arguments, "cannot be read: Permission denied", as_nobody)


@pytest.mark.parametrize("filename", sorted(ODD_FILES))
async def test_unusual_valid_images_are_converted_and_stored(served: Served, filename: str) -> None:
    async with Client(create_server(served.tools)) as client:
        result = await client.call_tool(
            "add_to_memory", {"memory": "odd", "label": filename, "images": [f"{served.inputs}/{filename}"]}
        )
    assert not result.is_error, result.content
    assert result.structured_content["added"] == 1
    entry = next(iter(served.tools.store.entries("odd", result.structured_content["entry_ids"]).values()))
    with Image.open(entry.image_path) as stored:
        assert stored.mode == "RGB"
        pixel = np.asarray(stored.getpixel((0, 0)), dtype=int)
    assert np.abs(pixel - ODD_FILES[filename][1]).max() <= 12  # JPEG storage moves colours slightly
