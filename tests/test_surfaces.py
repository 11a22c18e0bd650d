"""The Python API, the MCP tools and the CLI offer each operation with the same arguments, bounds and
defaults, because all three are derived from one request model per operation (`rar_tools.requests`)."""

from __future__ import annotations

import argparse
import inspect
import typing
from typing import Annotated

import anyio
import pytest
from mcp import Client
from pydantic import Field

from rar_tools.api import RarTools
from rar_tools.cli import OPERATIONS as CLI_OPERATIONS
from rar_tools.cli import build_parser
from rar_tools.cli_flags import add_request_flags, flag_of, plain_type
from rar_tools.errors import MemoryStoreError, RankerError, RegionError
from rar_tools.requests import (
    OPERATIONS,
    AddRequest,
    RankCandidatesRequest,
    RecognizeRequest,
    RetrieveRequest,
)
from rar_tools.server import create_server
from rar_tools.settings import Settings
from rar_tools.tool_schema import tool_parameters

API_METHODS = {
    "add_to_memory": "add_images",
    "retrieve_candidates": "retrieve",
    "rank_candidates": "rank",
    "recognize": "recognize",
    "recognize_regions": "recognize_regions",
    "detect_objects": "detect",
    "remove_from_memory": "remove",
    "list_memories": "list_memories",
    "find_duplicates": "find_duplicates",
    "find_conflicts": "find_conflicts",
    "relabel_entries": "relabel",
    "segment": "segment",
    "describe_regions": "describe_regions",
    "delete_memory": "delete_memory",
}
CLI_COMMANDS = {
    "retrieve_candidates": "retrieve",
    "rank_candidates": "rank",
    "recognize": "recognize",
    "recognize_regions": "recognize-regions",
    "detect_objects": "detect",
    "remove_from_memory": "remove",
    "list_memories": "memories",
    "find_duplicates": "duplicates",
    "find_conflicts": "conflicts",
    "relabel_entries": "relabel",
    "segment": "segment",
    "describe_regions": "describe-regions",
    "delete_memory": "delete",
}
SCHEMA_KEYS = (
    "type",
    "anyOf",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "default",
    "description",
)


@pytest.fixture(scope="module")
def listed_tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The MCP tools' input schemas, from a server that loads nothing."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), no_ranker=True)

    async def listing() -> dict[str, dict]:
        async with Client(create_server(RarTools(settings))) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    return anyio.run(listing)


def without_titles(schema: object) -> object:
    if isinstance(schema, dict):
        return {k: without_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [without_titles(v) for v in schema]
    return schema


@pytest.mark.parametrize("tool", sorted(OPERATIONS))
def test_each_tool_takes_its_request_models_fields(listed_tools: dict[str, dict], tool: str) -> None:
    request_type = OPERATIONS[tool]
    model = request_type.model_json_schema()["properties"]
    offered = listed_tools[tool]["properties"]
    assert list(offered) == [p.name for p in tool_parameters(request_type)]
    assert set(offered) == set(request_type.fields_on("mcp"))
    for name, schema in offered.items():
        expected = {k: v for k, v in without_titles(model[name]).items() if k in SCHEMA_KEYS}
        assert {k: v for k, v in without_titles(schema).items() if k in SCHEMA_KEYS} == expected, name
    required = [n for n, f in request_type.model_fields.items() if f.is_required()]
    assert sorted(listed_tools[tool].get("required", [])) == sorted(required)


def test_tool_bounds_come_from_the_limits(listed_tools: dict[str, dict]) -> None:
    from rar_tools import limits

    k = listed_tools["recognize"]["properties"]["k"]
    boxes = listed_tools["recognize_regions"]["properties"]["boxes"]
    candidates = listed_tools["rank_candidates"]["properties"]["candidates"]
    assert (k["minimum"], k["maximum"]) == (1, limits.MAX_K)
    assert boxes["maxItems"] == limits.MAX_BOXES
    assert (candidates["minItems"], candidates["maxItems"]) == (limits.MIN_CANDIDATES, limits.MAX_CANDIDATES)


@pytest.mark.parametrize("tool", sorted(OPERATIONS))
def test_each_api_method_takes_the_same_arguments_and_defaults(tool: str) -> None:
    request_type = OPERATIONS[tool]
    parameters = inspect.signature(getattr(RarTools, API_METHODS[tool])).parameters
    for name in request_type.fields_on("api"):
        if tool == "add_to_memory" and name in ("labels", "hierarchy"):
            continue  # add_images stores images; add_labels takes the label texts
        field = request_type.model_fields[name]
        assert name in parameters, name
        default = parameters[name].default
        assert default is inspect.Parameter.empty if field.is_required() else default == field.default, name


def cli_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a for a in sub._actions}


@pytest.mark.parametrize("tool", sorted(CLI_COMMANDS))
def test_each_cli_command_has_a_flag_per_field_with_the_same_default_and_choices(tool: str) -> None:
    request_type, command = OPERATIONS[tool], CLI_COMMANDS[tool]
    assert CLI_OPERATIONS[command][1] is request_type
    actions = cli_actions(command)
    for name in request_type.fields_on("cli"):
        field, action = request_type.model_fields[name], actions[name]
        if action.option_strings:
            assert action.option_strings == [flag_of(name, field)]
        if not field.is_required():
            assert action.default == field.default, name
        kind = plain_type(field.annotation)
        if typing.get_origin(kind) is typing.Literal:
            assert list(action.choices) == list(typing.get_args(kind)), name
        if kind in (int, float):
            assert action.type is kind, name


def test_the_add_commands_split_the_add_request_between_images_and_labels() -> None:
    images, labels = cli_actions("add"), cli_actions("add-labels")
    assert {"memory", "images", "label", "category", "parent", "box", "box_normalized"} <= set(images)
    assert {"memory", "labels", "category", "parent"} <= set(labels)
    assert "labels" not in images and "images" not in labels


def test_a_new_field_appears_on_every_surface_from_one_edit() -> None:
    class Extended(RetrieveRequest):
        margin: Annotated[int, Field(ge=0, le=3, description="an extra argument")] = 1

    parameters = {p.name: p for p in tool_parameters(Extended)}
    schema = typing.get_args(parameters["margin"].annotation)
    assert parameters["margin"].default == 1 and int in schema
    parser = argparse.ArgumentParser()
    add_request_flags(parser, Extended, Extended.fields_on("cli"))
    assert parser.parse_args(["m", "x.png", "--margin", "2"]).margin == 2
    assert Extended.from_call("m", "x.png", margin=3).margin == 3
    with pytest.raises(MemoryStoreError, match="margin"):
        Extended.from_call("m", "x.png", margin=4)


@pytest.mark.parametrize(
    ("request_type", "arguments", "error", "message"),
    [
        (RetrieveRequest, {"memory": "m", "image": "x", "k": 0}, MemoryStoreError, "k must be an integer from 1 to 50"),
        (RetrieveRequest, {"memory": "m", "image": "x", "k": True}, MemoryStoreError, "got True"),
        (RetrieveRequest, {"memory": "a..b", "image": "x"}, MemoryStoreError, "memory name 'a..b' is invalid"),
        (RetrieveRequest, {"memory": "m", "image": "x", "views": 6}, RegionError, "views must be an integer"),
        (RecognizeRequest, {"memory": "m", "image": "x", "min_confidence": 2}, RegionError, "min_confidence"),
        (RankCandidatesRequest, {"image": "x", "candidates": ["a"]}, RankerError, "give 2 to 50 candidates"),
        (RankCandidatesRequest, {"image": "x", "candidates": ["a", "a "]}, RankerError, "duplicate candidates"),
        (AddRequest, {"memory": "m"}, MemoryStoreError, "give either `images`"),
        (AddRequest, {"memory": "m", "labels": ["a"], "box": [0, 0, 1, 1]}, RegionError, "`box` goes with"),
        (RetrieveRequest, {"memory": "m", "image": "x", "mode": "fuzzy"}, MemoryStoreError, "mode: Input should be"),
    ],
)
def test_a_request_refuses_bad_arguments_with_a_sentence_naming_them(request_type, arguments, error, message) -> None:
    with pytest.raises(error, match=message) as caught:
        request_type.from_call(**arguments)
    assert "pydantic" not in str(caught.value)


def test_a_request_takes_positional_arguments_in_the_api_order() -> None:
    request = RecognizeRequest.from_call("birds", "/a.png", 3, "generate", "text", True)
    assert (request.memory, request.k, request.mode, request.retrieval_mode, request.exemplars) == (
        "birds",
        3,
        "generate",
        "text",
        True,
    )
    assert RecognizeRequest.from_call(request) is request
    with pytest.raises(TypeError, match="by position and by name"):
        RecognizeRequest.from_call("birds", "/a.png", memory="other")


def test_each_operation_declares_the_models_it_waits_for() -> None:
    assert RetrieveRequest.from_call("m", "x").needs() == {"encoder"}
    assert RankCandidatesRequest.from_call("x", ["a", "b"]).needs() == {"ranker"}
    assert RankCandidatesRequest.from_call("x", ["a", "b"], memory="m", exemplars=True).needs() == {"ranker", "encoder"}
    assert RecognizeRequest.from_call("m", "x").needs() == {"encoder", "ranker"}
    assert OPERATIONS["list_memories"].from_call().needs() == frozenset()
