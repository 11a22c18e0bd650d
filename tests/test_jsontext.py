"""JSON from outside: every unreadable text is a ValueError, however deeply it nests, and a
message's top-level id and method are found at any depth."""

from __future__ import annotations

import pytest

from rar_tools.jsontext import NestedTooDeeply, parse_json, top_level_scalars

DEEP = "[" * 100_000 + "]" * 100_000


def test_json_nested_past_the_parser_s_depth_is_a_value_error() -> None:
    with pytest.raises(NestedTooDeeply, match="nested too deeply"):
        parse_json(DEEP)
    assert issubclass(NestedTooDeeply, ValueError)


@pytest.mark.parametrize("text", ["", "{", "not json", b"\xff\xfe{", '{"a": 1}}'])
def test_text_that_is_not_json_is_a_value_error(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(text)


def test_json_is_read_as_python_s_parser_reads_it() -> None:
    assert parse_json(b'{"a": [1, 2.5, null, true, "\\u00e9"]}') == {"a": [1, 2.5, None, True, "é"]}


def test_the_top_level_scalars_are_found_beside_values_nested_at_any_depth() -> None:
    text = f'{{"jsonrpc": "2.0", "id": 5, "params": {{"arguments": {{"x": {DEEP}}}}}, "method": "tools/call"}}'
    assert top_level_scalars(text) == {"jsonrpc": "2.0", "id": 5, "method": "tools/call"}


def test_brackets_quotes_and_keys_inside_strings_and_nested_objects_are_not_taken_for_members() -> None:
    text = '{"params": {"id": 9, "s": "}{][\\", \\"id\\": 1"}, "id": "abc", "n": null, "f": -1.5e3, "b": false}'
    assert top_level_scalars(text) == {"id": "abc", "n": None, "f": -1500.0, "b": False}


@pytest.mark.parametrize("text", ["[1, 2]", '"a string"', "", "   ", "42", '{"a":'])
def test_a_text_that_is_no_object_has_no_top_level_scalars(text: str) -> None:
    assert top_level_scalars(text) == {}


def test_reading_stops_where_the_text_stops_being_json() -> None:
    assert top_level_scalars('  {"id": 3, "method": "m", "x": [[[') == {"id": 3, "method": "m"}
    assert top_level_scalars('{"id": 3 "broken') == {"id": 3}
