"""Property-based: random bytes and random argument values give an image or our own clear error,
never a crash (at the loader: only `ImageInputError`; at the tools: only errors with a message)."""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import ImageInputError, MemoryStoreError
from rar_tools.images import ImageLimits, load_image
from rar_tools.memory import MemoryStore, check_memory_name
from rar_tools.server import create_server
from rar_tools.settings import Settings

LIMITS = ImageLimits(max_bytes=256 * 1024, max_pixels=1_000_000)
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def encoded(fmt: str, mode: str = "RGB", frames: int = 1, **options) -> bytes:
    rng = np.random.default_rng(len(fmt) + frames)
    images = [Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).convert(mode) for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, save_all=frames > 1, append_images=images[1:], **options)
    return buffer.getvalue()


# Valid images of many formats and modes: mutating them reaches deep into each decoder.
SEEDS = [
    encoded("PNG"),
    encoded("PNG", "RGBA"),
    encoded("PNG", "P"),
    encoded("PNG", "I;16"),
    encoded("JPEG"),
    encoded("JPEG", "CMYK"),
    encoded("GIF", "P", frames=3),
    encoded("TIFF", frames=2),
    encoded("TIFF", "LAB"),
    encoded("BMP"),
    encoded("WEBP"),
    encoded("ICO"),
    encoded("PPM"),
    encoded("TGA"),
]


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A valid image with random bytes overwritten, cut at a random point, random bytes appended."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


ANY_BYTES = st.one_of(st.binary(max_size=2048), damaged_images(), st.sampled_from(SEEDS))


def check_decoded_or_refused(source: str, limits: ImageLimits = LIMITS) -> None:
    """`source` decodes to a bounded RGB image, or raises `ImageInputError`; nothing else."""
    try:
        loaded = load_image(source, limits)
    except ImageInputError as exc:
        assert str(exc)
        return
    assert loaded.image.mode == "RGB" and loaded.image.width * loaded.image.height <= limits.max_pixels
    assert len(loaded.sha256) == 64


@FUZZ
@given(data=ANY_BYTES)
def test_random_bytes_as_base64_decode_or_raise_our_error(data: bytes) -> None:
    check_decoded_or_refused(base64.b64encode(data).decode())


@FUZZ
@given(data=ANY_BYTES)
def test_random_bytes_as_a_file_decode_or_raise_our_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image"
        path.write_bytes(data)
        check_decoded_or_refused(str(path), ImageLimits(1024, LIMITS.max_pixels, allowed_dirs=(Path(folder),)))


PREFIXES = ["", "/", "//", "~", "~root/", "file://", "file:///", "data:", "data:image/png;base64,", "http://", "C:\\"]
IMAGE_ARGUMENTS = st.one_of(
    st.text(max_size=300),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(PREFIXES), st.text(max_size=300)),
    st.builds(lambda data: "data:image/png;base64," + base64.b64encode(data).decode(), ANY_BYTES),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-", min_size=16, max_size=400),
)


@FUZZ
@given(source=IMAGE_ARGUMENTS)
def test_random_image_arguments_decode_or_raise_our_error(source: str) -> None:
    check_decoded_or_refused(source, ImageLimits(LIMITS.max_bytes, LIMITS.max_pixels, allowed_dirs=(Path("/tmp"),)))


# --- memory names ----------------------------------------------------------------------------

NEAR_VALID_NAMES = st.builds(
    lambda base, tail: base + tail,
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,66}", fullmatch=True),
    st.sampled_from(["", "\n", ".", "-", "_", " ", "..", "/", "ü", "\x00"]),
)


@pytest.fixture(scope="module")
def name_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryStore]:
    store = MemoryStore(tmp_path_factory.mktemp("names"))
    yield store
    store.close()


@settings(max_examples=200, deadline=None, database=None)
@given(name=st.one_of(NEAR_VALID_NAMES, st.text(max_size=70)))
def test_every_memory_name_we_accept_is_one_chroma_accepts(name_store: MemoryStore, name: str) -> None:
    try:
        check_memory_name(name)
    except MemoryStoreError as exc:
        assert "is invalid: use 1-64 letters" in str(exc)
        return
    name_store.index.get_or_create(name, EncoderIdentity("test", "none", 4))  # Chroma must not object
    assert name in name_store.names()


# --- the tools -------------------------------------------------------------------------------

TEXT = st.text(max_size=250)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10_000), st.floats(allow_nan=False), TEXT)
# Names and labels near the edges of validity, and random text.
NAME_CHARS = st.sampled_from("aZ09._-/ \n\x00ü")
MEMORY = st.one_of(st.sampled_from(["m", "other"]), st.text(NAME_CHARS, max_size=8), TEXT)
LABEL = st.one_of(
    st.sampled_from(["red", "green", "Blue Jay"]), st.text(st.sampled_from("ab \t\n\x00\x1b'[]"), max_size=6), TEXT
)
LABELS = st.lists(LABEL, max_size=6)


def arguments(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    """Argument dicts with the named keys, each value of a wrong JSON type one time in four."""

    def mostly(value: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(value, value, value, JSON_SCALARS)

    return st.fixed_dictionaries(
        {key: mostly(value) for key, value in required.items()},
        optional={key: mostly(value) for key, value in optional.items()},
    )


def tool_calls(good_image: str) -> st.SearchStrategy[tuple[str, dict]]:
    image = st.one_of(st.just(good_image), IMAGE_ARGUMENTS)
    k = st.integers(-3, 60)
    rank_mode = st.sampled_from(["score", "generate", "best"])
    return st.one_of(
        st.tuples(
            st.just("add_to_memory"),
            arguments({"memory": MEMORY, "images": st.lists(image, max_size=3), "label": LABEL}, {"parent": LABEL}),
        ),
        st.tuples(st.just("add_to_memory"), arguments({"memory": MEMORY, "labels": LABELS}, {"category": LABEL})),
        st.tuples(
            st.just("retrieve_candidates"),
            arguments({"memory": MEMORY, "image": image}, {"k": k, "mode": st.sampled_from(["auto", "text", "x"])}),
        ),
        st.tuples(
            st.just("rank_candidates"),
            arguments({"image": image, "candidates": LABELS}, {"mode": rank_mode, "memory": MEMORY}),
        ),
        st.tuples(
            st.just("recognize"),
            arguments({"memory": MEMORY, "image": image}, {"k": k, "mode": rank_mode, "exemplars": st.booleans()}),
        ),
        st.tuples(
            st.just("remove_from_memory"),
            arguments({"memory": MEMORY}, {"entry_ids": st.lists(TEXT, max_size=3), "label": TEXT}),
        ),
        st.tuples(st.just("list_memories"), arguments({}, {"max_labels": k})),
    )


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, clip_model: str, tiny_models_dir: Path
) -> Iterator[tuple[Callable[[str, dict], Any], str]]:
    """A blocking `call(name, arguments)` into one MCP session of a server with the tiny CLIP and
    tiny Qwen2-VL and memory `m` seeded; and a good image path."""
    root = tmp_path_factory.mktemp("fuzz")
    good = root / "good.png"
    good.write_bytes(SEEDS[0])
    tools = RarTools(
        Settings(data_dir=root / "data", clip_model=clip_model, ranker_model=str(tiny_models_dir / "mllm"))
    )
    tools.add_images("m", [str(good)], "red")
    tools.add_labels("m", ["green", "blue"])
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(create_server(tools))) as client:
        yield (lambda name, args: portal.call(client.call_tool, name, args)), str(good)
    tools.close()


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_tool_arguments_give_a_result_or_a_clear_error(fuzzed_server, data: st.DataObject) -> None:
    call, good = fuzzed_server
    name, args = data.draw(tool_calls(good))
    result = call(name, args)
    if result.is_error:
        text = result.content[0].text
        assert text.startswith(f"Error executing tool {name}: ") and len(text) > len(name) + 25, text
