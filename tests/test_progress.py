"""Progress notifications through the in-process MCP client: every value larger than the one before,
from the wait for models into the work, ending at the total."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from conftest import held_back, make_image
from mcp import Client

from rar_tools import server as server_module
from rar_tools.api import RarTools
from rar_tools.server import create_server
from rar_tools.settings import Settings

pytestmark = pytest.mark.anyio
Notification = tuple[float, float | None, str | None]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting step every 20 ms instead of every second, so that a model load of a fraction of a
    second shows as several steps."""
    monkeypatch.setattr(server_module, "WAIT_STEP_S", 0.02)


async def notifications(
    tools: RarTools, tool: str, arguments: dict, on_waiting: Callable[[], None] = lambda: None
) -> list[Notification]:
    """The progress notifications of one call (the call must succeed), up to the one that reaches
    the total; `on_waiting` runs at each waiting step."""
    seen: list[Notification] = []
    finished = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))
        if total is None:
            on_waiting()
        elif progress == total:
            finished.set()

    async with Client(create_server(tools)) as client:
        result = await client.call_tool(tool, arguments, progress_callback=on_progress)
        assert not result.is_error, result.content
        with anyio.fail_after(30):  # the client hands notifications to the callback in tasks of their own
            await finished.wait()
    return seen


def assert_increasing_to_the_total(seen: list[Notification], work_steps: int) -> None:
    """Strictly increasing values; the waiting steps have no total; the last is the total, which is
    the waiting steps plus the work's."""
    values = [progress for progress, _, _ in seen]
    assert values == sorted(set(values)), values
    waits = [n for n in seen if n[1] is None]
    assert all("waiting for the" in message for _, _, message in waits)
    assert seen[-1][0] == seen[-1][1] == len(waits) + work_steps


async def test_recognize_counts_on_from_the_wait_for_the_ranker(
    quick_waits: None, tmp_path: Path, clip_model: str, tiny_models_dir: Path
) -> None:
    tools = RarTools(
        Settings(data_dir=tmp_path / "d", clip_model=clip_model, ranker_model=str(tiny_models_dir / "mllm"))
    )
    image = str(make_image(tmp_path / "red.png", "red", seed=1))
    tools.add_images("m", [image], "red")  # the encoder is loaded; the ranker loads during the call
    tools.add_labels("m", ["blue"])
    released = threading.Event()
    tools.components.mllm = held_back("MLLM ranker", tools.components._load_ranker, released)
    seen = await notifications(tools, "recognize", {"memory": "m", "image": image}, on_waiting=released.set)
    assert any(n[1] is None for n in seen), "the call never waited for the ranker"
    assert_increasing_to_the_total(seen, work_steps=2)


async def test_add_to_memory_counts_its_images_after_the_wait(
    quick_waits: None, tmp_path: Path, clip_model: str, image_folder: Path
) -> None:
    tools = RarTools(Settings(data_dir=tmp_path / "d", clip_model=clip_model, no_ranker=True))
    images = [str(p) for p in sorted((image_folder / "red").iterdir())]
    seen = await notifications(tools, "add_to_memory", {"memory": "m", "label": "red", "images": images})
    assert_increasing_to_the_total(seen, work_steps=3)  # three images
    assert seen[-1][2] == "adding images: 3/3"


async def test_detect_objects_reports_reading_and_detecting(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", clip_model=clip_model, no_ranker=True, detector_model=str(tiny_models_dir / "detector")
    )
    image = str(make_image(tmp_path / "scene.png", "green", seed=2, size=(120, 90)))
    seen = await notifications(RarTools(settings), "detect_objects", {"image": image, "queries": ["a bird"]})
    assert_increasing_to_the_total(seen, work_steps=2)
    assert [message for _, total, message in seen if total is not None] == ["detecting: 1/2", "detecting: 2/2"]
