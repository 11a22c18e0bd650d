"""Reading a region description (caption, attributes, phrase|category|parent), and checking a proposed
name against retrieved memory labels: pure functions, hand-written inputs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rar_tools.describing.check import memory_match
from rar_tools.describing.parsing import ProposedLabel, parse_description, parse_label
from rar_tools.describing.prompts import description_prompt

GOAT = ProposedLabel("a goat holding flowers", "goat", "animal")


def test_the_requested_json_is_read_whole_without_fallback() -> None:
    answer = (
        '{"caption": "A goat holds flowers in a field.", "attributes": {"colour": "white", "count": 1}, '
        '"label": "a goat holding flowers|goat|animal"}'
    )
    parsed = parse_description(answer)
    assert parsed.caption == "A goat holds flowers in a field."
    assert parsed.attributes == {"colour": "white", "count": "1"}
    assert parsed.label == GOAT
    assert (parsed.fallback, parsed.missing) == ("none", ())


def test_json_inside_prose_and_with_single_quotes_is_found() -> None:
    answer = "Sure, here it is: {'caption': 'A goat.', 'attributes': {'color': 'white'}, 'label': 'goat|goat|animal'}"
    parsed = parse_description(answer)
    assert parsed.fallback == "none" and parsed.attributes == {"colour": "white"}
    assert parsed.label == ProposedLabel("goat", "goat", "animal")


def test_key_value_lines_are_a_partial_fallback() -> None:
    answer = "caption: A red car parked by a wall.\ncolour: red\nmaterial: metal\nlabel: red car|car|vehicle"
    parsed = parse_description(answer)
    assert parsed.caption == "A red car parked by a wall."
    assert parsed.attributes == {"colour": "red", "material": "metal"}
    assert parsed.label == ProposedLabel("red car", "car", "vehicle")
    assert parsed.fallback == "partial" and parsed.missing == ()


def test_a_label_anywhere_and_a_prose_caption_are_found_with_what_is_missing() -> None:
    parsed = parse_description("This is a small bird on a branch. blue jay|jay|bird")
    assert parsed.label == ProposedLabel("blue jay", "jay", "bird")
    assert parsed.caption == "This is a small bird on a branch."
    assert parsed.fallback == "partial" and parsed.missing == ("attributes",)


@pytest.mark.parametrize("answer", ["", "###", "ok", "\x00\x01", "{", "}" * 50, "[" * 10_000, '{"a": ' * 3000])
def test_unusable_answers_are_a_full_fallback_and_never_raise(answer: str) -> None:
    parsed = parse_description(answer)
    assert parsed.fallback == "full" and parsed.label is None and parsed.caption is None


def test_a_non_string_answer_is_a_full_fallback() -> None:
    assert parse_description(None).fallback == "full"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, label",
    [
        ("goat", ProposedLabel("goat", "goat", None)),
        ("white goat|goat", ProposedLabel("white goat", "goat", None)),
        (" 'a goat | goat | animal ' ", ProposedLabel("a goat", "goat", "animal")),
        ("a|b|c|d", ProposedLabel("a", "b", "c")),
        ("||", None),
    ],
)
def test_labels_take_one_to_three_parts(text: str, label: ProposedLabel | None) -> None:
    assert parse_label(text) == label


def test_names_and_captions_are_sanitised_as_candidates_are() -> None:
    label = "x" * 500 + "|cat\\u001b[31m|pet"
    answer = '{"caption": "A cat\\u0007 sits\\n\\n on  a mat.", "attributes": {}, "label": "' + label + '"}'
    parsed = parse_description(answer)
    assert parsed.caption == "A cat sits on a mat."
    assert parsed.label is not None and len(parsed.label.phrase) == 200
    assert parsed.label.category == "cat[31m"  # the escape character is gone; what is left is plain text


def test_attributes_are_capped_in_number_and_length() -> None:
    pairs = ", ".join(f'"k{i}": "{"v" * 100}"' for i in range(20))
    parsed = parse_description('{"caption": "A thing here.", "attributes": {' + pairs + '}, "label": "a|b|c"}')
    assert len(parsed.attributes) == 8 and all(len(v) == 60 for v in parsed.attributes.values())


def test_the_prompt_asks_for_json_with_the_detclipv3_label_and_mentions_context_views() -> None:
    assert '"label": "phrase|category|parent category"' in description_prompt(0)
    assert "red ellipse" in description_prompt(1) and "red ellipse" not in description_prompt(0)


@dataclass
class Found:
    label: str
    score: float
    category: str | None = None
    parent: str | None = None


def test_a_name_the_memory_has_as_a_label_is_held() -> None:
    match = memory_match("herring gull", [Found("Blue Jay", 0.9), Found("Herring Gull", 0.8)], "text", 0.95)
    assert (match.status, match.level, match.label, match.similarity) == ("held", "label", "Herring Gull", 0.8)


def test_a_name_the_memory_has_as_a_category_is_held_at_that_level() -> None:
    match = memory_match("gull", [Found("Herring Gull", 0.8, "gull", "bird")], "text", 0.95)
    assert (match.status, match.level) == ("held", "category")


def test_a_parent_counts_as_held_only_for_coarse_names() -> None:
    found = [Found("Herring Gull", 0.5, "gull", "bird")]
    assert memory_match("bird", found, "text", 0.95, coarse=True).level == "parent"
    assert memory_match("bird", found, "text", 0.95).status == "none"


def test_the_nearest_label_is_near_from_the_threshold_on() -> None:
    found = [Found("Western Gull", 0.9), Found("Blue Jay", 0.7)]
    near = memory_match("herring gull", found, "text", 0.9)
    assert (near.status, near.label, near.similarity, near.kind) == ("near", "Western Gull", 0.9, "text")
    assert memory_match("herring gull", found, "text", 0.91).status == "none"


def test_nothing_retrieved_is_none_without_a_label() -> None:
    match = memory_match("gull", [], None, 0.5)
    assert (match.status, match.label, match.similarity) == ("none", None, None)
