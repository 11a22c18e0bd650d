"""`describe_regions` and `propose_when_unsure` with the tiny Qwen2-VL and LLaVA (random weights: the
answers are noise, so these check mechanics), and with a stand-in OpenAI-compatible endpoint that
answers in the requested format (so the whole structured path runs, memory check included)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.errors import RankerError, RegionError
from rar_tools.mcp_extras import WORKFLOW
from rar_tools.server import create_server
from rar_tools.settings import Settings

BIRDS = ["Herring Gull", "Blue Jay"]
GOOD_ANSWER = {
    "caption": "A gull stands on a rock by the sea.",
    "attributes": {"colour": "white and grey", "state": "standing", "count": "1"},
    "label": "a gull on a rock|Herring Gull|bird",
}


def local_tools(tmp_path: Path, clip_model: str, models: Path, family: str = "mllm", **settings) -> RarTools:
    return RarTools(
        Settings(
            data_dir=tmp_path / "data",
            clip_model=clip_model,
            ranker_model=str(models / family),
            detector_model=str(models / "detector"),
            **settings,
        )
    )


@pytest.fixture
def qwen_tools(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> RarTools:
    tools = local_tools(tmp_path, clip_model, tiny_models_dir)
    tools.add_labels("birds", BIRDS, category="bird", parent="animal")
    return tools


def test_one_description_per_box_with_the_raw_answer(qwen_tools: RarTools, scene: str) -> None:
    result = qwen_tools.describe_regions(scene, [[30, 20, 90, 70], [0, 0, 60, 50]])
    assert result.image_size == [140, 100] and result.describer.startswith("transformers:")
    assert [r.box for r in result.regions] == [[30.0, 20.0, 90.0, 70.0], [0.0, 0.0, 60.0, 50.0]]
    for region in result.regions:
        assert isinstance(region.raw_text, str) and region.raw_text
        assert region.fallback in ("none", "partial", "full")
        assert region.view_steps[0] == 0.0 and len(region.view_steps) == 2 and 0 < region.view_steps[1] <= 1
        assert region.check is None  # no memory given


def test_views_one_shows_the_tight_view_only_and_a_whole_image_box_has_no_context(
    qwen_tools: RarTools, scene: str
) -> None:
    assert qwen_tools.describe_regions(scene, [[30, 20, 90, 70]], views=1).regions[0].view_steps == [0.0]
    assert qwen_tools.describe_regions(scene, [[0, 0, 140, 100]], views=3).regions[0].view_steps == [0.0]
    assert len(qwen_tools.describe_regions(scene, [[30, 20, 90, 70]], views=3).regions[0].view_steps) == 3


def test_a_smaller_token_budget_gives_a_prefix_of_the_greedy_answer(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, scene: str
) -> None:
    answers = []
    for budget in (16, 64):
        tools = local_tools(tmp_path / str(budget), clip_model, tiny_models_dir, describe_max_new_tokens=budget)
        answers.append(tools.describe_regions(scene, [[30, 20, 90, 70]]).regions[0].raw_text)
    short, long = answers
    assert long.startswith(short) and len(short) < len(long)


def test_a_single_image_model_refuses_context_views_clearly_and_describes_with_one(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, scene: str
) -> None:
    tools = local_tools(tmp_path, clip_model, tiny_models_dir, family="llava")
    with pytest.raises(RankerError, match="one image per prompt.*describe with views=1"):
        tools.describe_regions(scene, [[30, 20, 90, 70]], views=2)
    assert tools.describe_regions(scene, [[30, 20, 90, 70]], views=1).regions[0].view_steps == [0.0]


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"boxes": [[200, 200, 220, 220]]}, RegionError, "lies outside the 140x100 image"),
        ({"boxes": []}, RegionError, "give a list of 1 to 100 boxes"),
        ({"boxes": [[0, 0, 50, 50]], "views": 6}, RegionError, "views must be an integer from 1"),
        ({"boxes": [[0, 0, 50, 50]], "memory": "nope"}, Exception, "memory 'nope' does not exist"),
    ],
)
def test_bad_arguments_are_refused_by_name(qwen_tools: RarTools, scene: str, arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        qwen_tools.describe_regions(scene, **arguments)


def test_an_unsure_recognition_carries_a_checked_proposal(qwen_tools: RarTools, scene: str) -> None:
    result = qwen_tools.recognize(
        "birds", scene, k=2, box=[30, 20, 90, 70], min_confidence=1.0, propose_when_unsure=True
    )
    assert result.proposal is not None and result.proposal.box == [30.0, 20.0, 90.0, 70.0]
    assert len(result.proposal.view_steps) == 2
    if result.proposal.proposal is not None:  # random weights may write no label at all
        assert result.proposal.check is not None and result.proposal.check.memory == "birds"


def test_a_sure_recognition_or_one_not_asking_carries_no_proposal(qwen_tools: RarTools, scene: str) -> None:
    assert qwen_tools.recognize("birds", scene, k=2, min_confidence=0.0, propose_when_unsure=True).proposal is None
    assert qwen_tools.recognize("birds", scene, k=2, min_confidence=1.0).proposal is None


def test_nothing_retrieved_counts_as_unsure_and_a_whole_image_is_described_as_one_view(
    qwen_tools: RarTools, scene: str
) -> None:
    result = qwen_tools.recognize("birds", scene, retrieval_mode="image", propose_when_unsure=True)
    assert result.label is None and result.proposal is not None
    assert result.proposal.box == [0.0, 0.0, *[float(v) for v in Image.open(scene).size]]
    assert result.proposal.view_steps == [0.0]


def test_recognize_regions_proposes_for_each_unsure_box(qwen_tools: RarTools, scene: str) -> None:
    boxes = [[30, 20, 90, 70], [0, 0, 60, 50]]
    result = qwen_tools.recognize_regions("birds", scene, boxes, k=2, min_confidence=1.0, propose_when_unsure=True)
    assert [r.proposal.box for r in result.regions] == [[30.0, 20.0, 90.0, 70.0], [0.0, 0.0, 60.0, 50.0]]


def test_detect_objects_then_describe_regions_is_generative_detection(qwen_tools: RarTools, scene: str) -> None:
    found = qwen_tools.detect(scene, ["an object"], threshold=0.0, max_boxes=2)
    boxes = [d.box for d in found.detections]
    assert boxes
    described = qwen_tools.describe_regions(scene, boxes)
    assert [r.box for r in described.regions] == boxes


def test_the_workflow_prompt_describes_the_propose_confirm_add_loop() -> None:
    text = WORKFLOW.format(memory="birds", image="'x.jpg'")
    assert "propose_when_unsure=true" in text and "describe_regions" in text
    assert text.index("propose_when_unsure") < text.index("add_to_memory` with the image")


# -- the structured path, through an OpenAI-compatible endpoint that answers as asked --------------------
class Endpoint:
    """A stand-in chat-completions server: records each request, answers every one with `answer`."""

    def __init__(self, answer: str) -> None:
        self.answer, self.requests = answer, []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                endpoint.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                message = {"role": "assistant", "content": endpoint.answer}
                body = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint(json.dumps(GOOD_ANSWER))
    yield server
    server.close()


@pytest.fixture
def api_tools(tmp_path: Path, clip_model: str, endpoint: Endpoint) -> RarTools:
    tools = RarTools(
        Settings(
            data_dir=tmp_path / "data",
            clip_model=clip_model,
            ranker_url=endpoint.url,
            ranker_api_model="test-vlm",
            describe_max_new_tokens=77,
        )
    )
    tools.add_labels("birds", BIRDS, category="gull", parent="bird")
    return tools


def test_an_answer_in_the_requested_format_is_read_whole(api_tools: RarTools, scene: str) -> None:
    region = api_tools.describe_regions(scene, [[30, 20, 90, 70]]).regions[0]
    assert (region.fallback, region.missing) == ("none", [])
    assert region.caption == GOOD_ANSWER["caption"] and region.attributes["state"] == "standing"
    proposal = region.proposal
    assert (proposal.phrase, proposal.category, proposal.parent) == ("a gull on a rock", "Herring Gull", "bird")
    assert region.raw_text == json.dumps(GOOD_ANSWER)


def test_the_endpoint_is_shown_every_view_and_bounded_in_tokens(
    api_tools: RarTools, endpoint: Endpoint, scene: str
) -> None:
    api_tools.describe_regions(scene, [[30, 20, 90, 70]], views=3)
    (sent,) = endpoint.requests
    content = sent["messages"][0]["content"]
    assert [part["type"] for part in content] == ["image_url"] * 3 + ["text"]
    assert (sent["max_tokens"], sent["temperature"]) == (77, 0)
    assert "phrase|category|parent" in content[-1]["text"]


def test_the_proposal_is_checked_against_the_memory(api_tools: RarTools, scene: str) -> None:
    check = api_tools.describe_regions(scene, [[30, 20, 90, 70]], memory="birds").regions[0].check
    assert check is not None and check.memory == "birds"
    assert (check.category.status, check.category.level, check.category.label) == ("held", "label", "Herring Gull")
    assert check.category.similarity == pytest.approx(1.0, abs=1e-5) and check.category.kind == "text"
    assert (check.parent.status, check.parent.level) == ("held", "parent")


def test_a_name_the_memory_lacks_is_near_or_none_by_the_threshold(
    tmp_path: Path, clip_model: str, endpoint: Endpoint, scene: str
) -> None:
    endpoint.answer = json.dumps({**GOOD_ANSWER, "label": "a tern|Arctic Tern|seabird"})
    statuses = []
    for near in (-1.0, 1.0):
        tools = RarTools(
            Settings(
                data_dir=tmp_path / str(near), clip_model=clip_model, ranker_url=endpoint.url, near_text_similarity=near
            )
        )
        tools.add_labels("birds", BIRDS)
        category = tools.describe_regions(scene, [[30, 20, 90, 70]], memory="birds").regions[0].check.category
        assert category.label in BIRDS and category.level is None and category.similarity is not None
        statuses.append(category.status)
    assert statuses == ["near", "none"]


def test_an_image_only_memory_is_checked_against_its_exemplars(api_tools: RarTools, scene: str) -> None:
    api_tools.add_images("photos", [scene], label="Herring Gull")
    check = api_tools.describe_regions(scene, [[30, 20, 90, 70]], memory="photos").regions[0].check
    assert check.category.kind == "image" and check.category.status == "held"


def test_the_proposal_reaches_recognize_through_the_endpoint(api_tools: RarTools, scene: str) -> None:
    result = api_tools.recognize("birds", scene, k=2, mode="generate", min_confidence=1.0, propose_when_unsure=True)
    assert result.proposal.proposal.category == "Herring Gull"
    assert result.proposal.check.category.status == "held"


async def describe_over_mcp(tools: RarTools, arguments: dict):
    async with Client(create_server(tools)) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        return listed, await client.call_tool("describe_regions", arguments)


def test_the_mcp_tool_is_read_only_and_structured(api_tools: RarTools, scene: str) -> None:
    listed, result = anyio.run(
        describe_over_mcp, api_tools, {"image": scene, "boxes": [[30, 20, 90, 70]], "memory": "birds"}
    )
    tool = listed["describe_regions"]
    assert tool.annotations.read_only_hint and tool.output_schema is not None
    assert "propose_when_unsure" in listed["recognize"].input_schema["properties"]
    assert not result.is_error
    assert result.structured_content["regions"][0]["check"]["category"]["status"] == "held"


def test_the_mcp_tool_refuses_a_box_outside_the_image(api_tools: RarTools, scene: str) -> None:
    _, result = anyio.run(describe_over_mcp, api_tools, {"image": scene, "boxes": [[500, 500, 520, 520]]})
    assert result.is_error and "lies outside" in result.content[0].text


def test_the_describe_evaluation_counts_answers_in_the_requested_format(
    api_tools: RarTools, scene: str, tmp_path: Path
) -> None:
    from rar_tools.evaluation.description import evaluate_descriptions

    folder = Path(scene).parent
    report, paths = evaluate_descriptions(api_tools, folder, tmp_path / "eval", views=2)
    assert report.regions == report.images == 1
    assert report.fallback_rates == {"none": 1.0, "partial": 0.0, "full": 0.0}
    assert report.found_rates == {"caption": 1.0, "attributes": 1.0, "label": 1.0}
    assert paths["markdown"].read_text().startswith("# describe_regions on")


def test_the_cli_describes_boxes(api_tools: RarTools, endpoint: Endpoint, scene: str, capsys) -> None:
    from rar_tools.cli import main

    settings = ["--data-dir", str(api_tools.settings.data_dir), "--clip-model", api_tools.settings.clip_model]
    code = main(
        [
            "describe-regions",
            scene,
            "--box",
            "30",
            "20",
            "90",
            "70",
            "--memory",
            "birds",
            "--ranker-url",
            endpoint.url,
            *settings,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "proposed label: a gull on a rock|Herring Gull|bird" in printed and "'Herring Gull' held" in printed


def test_without_a_ranker_describing_is_refused_clearly(tools: RarTools, scene: str) -> None:
    with pytest.raises(RankerError, match="no ranker: this server was started with --no-ranker"):
        tools.describe_regions(scene, [[30, 20, 90, 70]])
