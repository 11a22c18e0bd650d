"""rank_candidates and recognize through the MCP protocol, with both tiny MLLM families."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.server import create_server
from rar_tools.settings import Settings

pytestmark = pytest.mark.anyio
CANDIDATES = ["Blue Jay", "Herring Gull", "American Crow", "Cardinal"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["mllm", "llava"])
def ranked_tools(request, tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> RarTools:
    """RarTools with the tiny CLIP and one tiny MLLM family (Qwen2-VL, then LLaVA)."""
    settings = Settings(
        data_dir=tmp_path / "data", clip_model=clip_model, ranker_model=str(tiny_models_dir / request.param)
    )
    return RarTools(settings)


async def call(client: Client, name: str, **arguments):
    return await client.call_tool(name, arguments)


@pytest.mark.parametrize("mode", ["score", "generate"])
async def test_rank_candidates_orders_every_candidate_once(ranked_tools, image_folder: Path, mode: str) -> None:
    async with Client(create_server(ranked_tools)) as client:
        result = await call(
            client, "rank_candidates", image=str(image_folder / "red" / "0.png"), candidates=CANDIDATES, mode=mode
        )
    assert not result.is_error, result.content
    out = result.structured_content
    assert sorted(c["label"] for c in out["ranked"]) == sorted(CANDIDATES)
    assert out["best"] == out["ranked"][0]["label"] and out["mode"] == mode
    assert sum(c["score"] for c in out["ranked"]) == pytest.approx(1.0)
    assert out["ranker"].startswith("transformers:")
    assert (out["raw_text"] is None) == (mode == "score")


async def test_recognize_retrieves_then_ranks(ranked_tools, image_folder: Path) -> None:
    async with Client(create_server(ranked_tools)) as client:
        for colour in ("red", "green", "blue"):
            await call(
                client, "add_to_memory", memory="colours", label=colour, images=[str(image_folder / colour / "0.png")]
            )
        result = await call(client, "recognize", memory="colours", image=str(image_folder / "red" / "1.png"), k=3)
    assert not result.is_error, result.content
    out = result.structured_content
    retrieved = [c["label"] for c in out["retrieval"]["candidates"]]
    assert sorted(retrieved) == ["blue", "green", "red"]
    assert sorted(c["label"] for c in out["ranking"]["ranked"]) == sorted(retrieved)
    assert out["label"] == out["ranking"]["best"]
    assert {"retrieve_s", "rank_s", "total_s"} <= set(out["timings"])


async def test_recognize_with_a_single_label_skips_ranking(ranked_tools, image_folder: Path) -> None:
    async with Client(create_server(ranked_tools)) as client:
        await call(client, "add_to_memory", memory="one", label="red", images=[str(image_folder / "red" / "0.png")])
        result = await call(client, "recognize", memory="one", image=str(image_folder / "red" / "1.png"))
    out = result.structured_content
    assert out["label"] == "red" and out["ranking"] is None and "nothing was ranked" in out["note"]


THIN_SIZES = [(1000, 4), (4, 1000), (3000, 3), (100000, 1)]


@pytest.fixture(scope="module")
def qwen_tools(tmp_path_factory: pytest.TempPathFactory, clip_model: str, tiny_models_dir: Path) -> RarTools:
    """RarTools with the tiny Qwen2-VL, whose image processor refuses images thinner than 1:200."""
    data_dir = tmp_path_factory.mktemp("thin") / "data"
    return RarTools(Settings(data_dir=data_dir, clip_model=clip_model, ranker_model=str(tiny_models_dir / "mllm")))


def thin_image(folder: Path, size: tuple[int, int]) -> str:
    path = folder / f"{size[0]}x{size[1]}.png"
    Image.new("RGB", size, (200, 40, 40)).save(path)
    return str(path)


@pytest.mark.parametrize("size", THIN_SIZES, ids=[f"{w}x{h}" for w, h in THIN_SIZES])
async def test_a_very_thin_image_is_ranked(qwen_tools: RarTools, tmp_path: Path, size: tuple[int, int]) -> None:
    async with Client(create_server(qwen_tools)) as client:
        result = await call(client, "rank_candidates", image=thin_image(tmp_path, size), candidates=CANDIDATES)
    assert not result.is_error, result.content
    assert sorted(c["label"] for c in result.structured_content["ranked"]) == sorted(CANDIDATES)


async def test_a_very_thin_stored_exemplar_is_shown_to_the_ranker(
    qwen_tools: RarTools, tmp_path: Path, image_folder: Path
) -> None:
    async with Client(create_server(qwen_tools)) as client:
        for label, image in [("Blue Jay", thin_image(tmp_path, (1000, 4))), ("Cardinal", image_folder / "red/0.png")]:
            added = await call(client, "add_to_memory", memory="thin", images=[str(image)], label=label)
            assert not added.is_error, added.content
        result = await call(
            client,
            "recognize",
            memory="thin",
            image=str(image_folder / "red" / "1.png"),
            exemplars=True,
        )
    assert not result.is_error, result.content
    assert result.structured_content["ranking"]["exemplars_shown"] == 2
