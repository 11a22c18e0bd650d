"""Shared fixtures: tiny random checkpoints written once per test session, real files in tmp dirs."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import hypothesis
import numpy as np
import pytest
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.cli import StderrHandler
from rar_tools.lazy import BackgroundModel
from rar_tools.locking import LOCK_FILE
from rar_tools.memory import MemoryStore, open_http_client
from rar_tools.settings import Settings
from rar_tools.testing.tiny_models import write_tiny_clip, write_tiny_models

# Property-based tests explore at random on developer machines and replay a fixed sequence in CI,
# so a CI run is reproducible (hypothesis' "derandomize").
hypothesis.settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

# Tests never reach a model hub: everything they load is written to disk by the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT_DIR with clip/, mllm/ (tiny Qwen2-VL) and llava/ (tiny LLaVA), as the CLI writes it."""
    out = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(out)
    return out


@pytest.fixture(scope="session")
def clip_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny CLIP as an open_clip model name, exactly as a user would pass a local folder."""
    return f"local-dir:{write_tiny_clip(tmp_path_factory.mktemp('tiny-clip'))}"


def held_back(name: str, loader: Callable[[], object], released: threading.Event) -> BackgroundModel:
    """A background model that runs the real `loader` only once `released` is set (at most 30 s
    later): a call that needs it waits, however fast the machine."""

    def load():
        released.wait(30)
        return loader()

    return BackgroundModel(name, load)


def locked_by_someone(data_dir: Path) -> bool:
    """Whether any open file description (this process's included) holds the data folder's flock."""
    with open(data_dir / LOCK_FILE, "a+") as probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
        return False


def make_image(path: Path, colour: str, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A noisy image dominated by one colour, different for every seed."""
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[colour], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def scene(tmp_path: Path) -> str:
    """A 140 x 100 noise image with a red rectangle at (30, 20, 90, 70), as an absolute path."""
    pixels = np.random.default_rng(2).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    pixels[20:70, 30:90] = (220, 30, 30)
    path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """`images/<colour>/<n>.png`: three images of each of four colours."""
    root = tmp_path / "images"
    for c_index, colour in enumerate(COLOURS):
        for n in range(3):
            make_image(root / colour / f"{n}.png", colour, seed=10 * c_index + n)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server (`chroma run`, from the chromadb package) on 127.0.0.1; yields its URL."""
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if chroma is None:
        pytest.skip("the `chroma` command of the chromadb package is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("chroma-server") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [chroma, "run", "--path", str(log.parent / "db"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_heartbeat(url, process, deadline=time.monotonic() + 60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_heartbeat(url: str, process: subprocess.Popen, deadline: float) -> None:
    import httpx

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the Chroma server at {url} did not answer within 60 s")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules that set MEMORY_BACKENDS run their store-using tests once per backend."""
    backends = getattr(metafunc.module, "MEMORY_BACKENDS", None)
    if backends and "memory_backend" in metafunc.fixturenames:
        metafunc.parametrize("memory_backend", backends, indirect=True)


@pytest.fixture(scope="session")
def decompression_bomb() -> bytes:
    """A tiny PNG whose header claims 100,000 x 100,000 pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def memory_backend(request: pytest.FixtureRequest) -> str:
    """Which store the memory tests run on: 'embedded' unless a test module parametrizes it."""
    return getattr(request, "param", "embedded")


@pytest.fixture
def chroma_database(memory_backend: str, request: pytest.FixtureRequest) -> tuple[str | None, str]:
    """(server URL or None, database): a fresh database on the server for each test."""
    if memory_backend == "embedded":
        return None, "default_database"
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    url = request.getfixturevalue("chroma_server")
    host, port = url.removeprefix("http://").split(":")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = chromadb.AdminClient(
        ChromaSettings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=host,
            chroma_server_http_port=int(port),
            anonymized_telemetry=False,
        )
    )
    admin.create_database(name)
    return url, name


@pytest.fixture
def make_store(chroma_database: tuple[str | None, str]) -> Iterator[Callable[[Path], MemoryStore]]:
    """Open a MemoryStore on `data_dir` with the backend under test (embedded or Chroma server);
    each is closed after the test."""
    url, database = chroma_database
    opened: list[MemoryStore] = []

    def make(data_dir: Path) -> MemoryStore:
        opened.append(MemoryStore(data_dir, open_http_client(url, database) if url else None))
        return opened[-1]

    yield make
    for store in opened:
        store.close(wait_s=30)


@pytest.fixture
def settings(tmp_path: Path, clip_model: str, chroma_database: tuple[str | None, str]) -> Settings:
    """Settings with a fresh data dir and the tiny CLIP; no ranker; the memory backend under test."""
    url, database = chroma_database
    return Settings(
        data_dir=tmp_path / "data", clip_model=clip_model, no_ranker=True, chroma_url=url, chroma_database=database
    )


@pytest.fixture
def tools(settings: Settings) -> Iterator[RarTools]:
    """The API on `settings`; its store closed after the test."""
    made = RarTools(settings)
    yield made
    made.close(wait_s=30)


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """An ImageFolder data set, `labelled/{train,test}/<colour>_thing/<n>.png`: three visually distinct
    classes, four train and three test images each. Labels carry underscores, as data sets do."""
    root = tmp_path / "labelled"
    for c_index, colour in enumerate(("red", "green", "blue")):
        for split, count in (("train", 4), ("test", 3)):
            for n in range(count):
                seed = 100 * c_index + (50 if split == "test" else 0) + n
                make_image(root / split / f"{colour}_thing" / f"{n}.png", colour, seed=seed)
    return root


async def wait_for_http_server(url: str, process: subprocess.Popen, deadline: float) -> None:
    """Poll `list_memories` at `url` until the server answers."""
    while True:
        try:
            async with Client(url) as client:
                await client.call_tool("list_memories", {})
                return
        except Exception:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not answer in time"
            await anyio.sleep(0.3)


@pytest.fixture
def http_server(tmp_path: Path, clip_model: str) -> Iterator[Callable[..., str]]:
    """Start `rar-tools serve --transport http` on a free 127.0.0.1 port (data in tmp_path/data,
    the tiny CLIP, plus any extra flags); returns its /mcp URL once it answers. Stopped afterwards.
    The n-th server started logs to tmp_path/server-n.log."""
    processes: list[subprocess.Popen] = []

    def start(*flags: str) -> str:
        port = free_port()
        command = [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(tmp_path / "data")]
        command += ["--clip-model", clip_model, "--transport", "http", "--port", str(port), *flags]
        log = (tmp_path / f"server-{len(processes)}.log").open("w")
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))
        log.close()
        url = f"http://127.0.0.1:{port}/mcp"
        anyio.run(wait_for_http_server, url, processes[-1], time.monotonic() + 90)
        return url

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_ranker_dirs(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint folder per ranker family the project supports, keyed by `model_type`."""
    from rar_tools.testing.tiny_families import write_tiny_gemma3, write_tiny_qwen3vl, write_tiny_qwen25vl

    out = tmp_path_factory.mktemp("tiny-rankers")
    return {
        "qwen2_vl": tiny_models_dir / "mllm",
        "llava": tiny_models_dir / "llava",
        "qwen2_5_vl": write_tiny_qwen25vl(out / "qwen2.5-vl"),
        "qwen3_vl": write_tiny_qwen3vl(out / "qwen3-vl"),
        "gemma3": write_tiny_gemma3(out / "gemma3"),
    }


MODEL_FIXTURES = frozenset({"tiny_models_dir", "clip_model"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that load tiny checkpoints `models`, so `-m "not models"` runs the fast rest."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.models)


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """A test that runs the CLI in this process (which configures logging for a command) leaves no
    handler of ours on the root logger and the levels as it found them, so later tests' logs are not
    echoed on the terminal. (Pytest's own capture handlers come and go per test phase: left alone.)"""
    root, ours = logging.getLogger(), logging.getLogger("rar_tools")
    levels = root.level, ours.level
    yield
    for handler in root.handlers[:]:
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


@pytest.fixture(autouse=True)
def signal_handlers_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test leaves this process's SIGINT and SIGTERM handlers as it found them, so that Ctrl-C
    keeps working and later tests see the defaults: a test that does not is an error (and the
    handlers are put back)."""
    watched = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in watched}
    yield
    changed = {s.name: signal.getsignal(s) for s in watched if signal.getsignal(s) is not before[s]}
    for s in watched:
        if before[s] is not None:
            signal.signal(s, before[s])
    assert not changed, f"{request.node.nodeid} left signal handlers changed: {changed}"


@pytest.fixture(autouse=True, scope="module")
def stores_closed_after_the_module() -> Iterator[None]:
    """Every memory store opened in a test module is closed when the module ends (module-scoped
    fixtures share theirs until then). Each holds about 20 files open, Chroma's database and index
    among them: a suite that left them open ran out of descriptors under the common limit of 1,024."""
    opened: list[MemoryStore] = []
    open_store = MemoryStore.__init__

    def open_and_record(store: MemoryStore, *args, **kwargs) -> None:
        open_store(store, *args, **kwargs)
        opened.append(store)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MemoryStore, "__init__", open_and_record)
        yield
    for store in opened:
        store.close(wait_s=30)
