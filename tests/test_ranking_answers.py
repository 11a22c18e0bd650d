"""Adversarial ranker answers: one row per way an MLLM's reply can mislead the parser.

Each row is an answer text, the candidates in retrieval order, the order the parser must give and its
fallback. Many rows put a candidate's name in the reasoning before the list, or make the line
fallback read the same text differently, so that the row fails unless the source the module docstring
names (first bracketed list, literal, quoted items, unfinished items, lines) is the one that decided it.
"""

from __future__ import annotations

import pytest

from rar_tools.ranking.parsing import parse_ranking

BIRDS = ("Blue Jay", "Northern Cardinal", "Anna's Hummingbird", "American Robin")
DUCKS = ("Mallard [female]", "Mallard [male]", "Wood Duck")  # label names holding brackets
GULLS = ("Gull, Western", "Gull, Herring", "Franklin's Gull", "Gull")  # label names holding commas
ANIMALS = ("Bat", "Cat", "Rat")  # names so short that one lost letter is a different animal

ANSWERS = [
    # -- layout -----------------------------------------------------------------------------------
    pytest.param(
        "Here is my ranking:\n\n1. American Robin\n2. Northern Cardinal\n3. Blue Jay\n4. Anna's Hummingbird",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "none",
        id="blank-line-after-the-preamble",
    ),
    pytest.param(
        "1) American Robin\n(2) Blue Jay\n#3 Northern Cardinal\n- Anna's Hummingbird",
        BIRDS,
        ["American Robin", "Blue Jay", "Northern Cardinal", "Anna's Hummingbird"],
        "none",
        id="mixed-numbering-styles",
    ),
    pytest.param(
        "American Robin; then Northern Cardinal",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="one-separator-line-is-split",
    ),
    pytest.param(
        "| rank | bird |\n|---|---|\n| 1 | American Robin |\n| 2 | Blue Jay |",
        BIRDS,
        ["American Robin", "Blue Jay", "Northern Cardinal", "Anna's Hummingbird"],
        "partial",
        id="markdown-table",
    ),
    pytest.param(
        '{"ranking": ["Northern Cardinal", "Blue Jay"]}',
        BIRDS,
        ["Northern Cardinal", "Blue Jay", "Anna's Hummingbird", "American Robin"],
        "partial",
        id="json-object",
    ),
    pytest.param(
        "['American Robin (0.61)', 'Blue Jay (0.22)']",
        BIRDS,
        ["American Robin", "Blue Jay", "Northern Cardinal", "Anna's Hummingbird"],
        "partial",
        id="scores-beside-the-names",
    ),
    pytest.param(
        "['\uff22\uff4c\uff55\uff45 \uff2a\uff41\uff59']",
        BIRDS,
        list(BIRDS),
        "partial",
        id="fullwidth-letters",
    ),
    pytest.param(
        "['Blue Jay', '', 'American Robin']",
        BIRDS,
        ["Blue Jay", "American Robin", "Northern Cardinal", "Anna's Hummingbird"],
        "partial",
        id="empty-item-is-skipped-not-the-end",
    ),
    # -- which list counts ------------------------------------------------------------------------
    pytest.param(
        "['American Robin', 'Northern Cardinal']\nOn reflection: ['Blue Jay', \"Anna's Hummingbird\"]",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="first-list-wins",
    ),
    pytest.param(
        "Format: ['category A', 'category B']\nAnswer: ['Northern Cardinal', 'American Robin']\nNot ['Blue Jay']",
        BIRDS,
        ["Northern Cardinal", "American Robin", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="echo-then-answer-then-aside",
    ),
    pytest.param(
        "The crest rules out Blue Jay.\n['American Robin', 'Northern Cardinal']",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="list-beats-a-name-in-the-reasoning",
    ),
    pytest.param(
        "Format: ['category A', 'category B']\nBlue Jay is unlikely.\nAnswer: ['American Robin', 'Northern Cardinal']",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="echoed-example-skipped-for-the-next-list",
    ),
    pytest.param(
        "Format: [category A, category B]\nNot the Blue Jay.\nAnswer: [American Robin, Northern Cardinal]",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="unquoted-lists",
    ),
    pytest.param(
        "[American Robin, Northern Cardinal] (not [Blue Jay])",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="unquoted-list-ends-at-its-own-bracket",
    ),
    pytest.param(
        "Not Blue Jay.\n[category A, category B][American Robin, Northern Cardinal]",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="unquoted-lists-back-to-back",
    ),
    pytest.param(
        "Not Blue Jay.\n['category A']['American Robin', 'Northern Cardinal']",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="literal-lists-back-to-back",
    ),
    # -- literal, quoted and comma-separated items ------------------------------------------------
    pytest.param(
        "Answer: ['Mallard [male]', 'Wood Duck', 'Mallard [female]'].",
        DUCKS,
        ["Mallard [male]", "Wood Duck", "Mallard [female]"],
        "none",
        id="brackets-inside-quoted-names",
    ),
    pytest.param(
        "['Mallard [male]', 'Wood Duck'] rather than ['Mallard [female]']",
        DUCKS,
        ["Mallard [male]", "Wood Duck", "Mallard [female]"],
        "partial",
        id="literal-ends-at-its-own-bracket",
    ),
    pytest.param(
        "[['Gull, Herring', 'Gull, Western']]",
        GULLS,
        ["Gull, Herring", "Gull, Western", "Franklin's Gull", "Gull"],
        "partial",
        id="nested-literal-with-commas-in-names",
    ),
    pytest.param(
        "[ 'Gull, Herring', 'Franklin's Gull', 'Gull, Western']",
        GULLS,
        ["Gull, Herring", "Franklin's Gull", "Gull, Western", "Gull"],
        "partial",
        id="quoted-items-of-an-invalid-literal-keep-their-commas",
    ),
    pytest.param(
        "[Rat, Cat] not Bat",
        ANIMALS,
        ["Rat", "Cat", "Bat"],
        "partial",
        id="short-names-in-an-unquoted-list",
    ),
    # -- lists cut off by max_new_tokens ----------------------------------------------------------
    pytest.param(
        "[Northern Cardinal, American Robin, Anna's Hummingbird",
        BIRDS,
        ["Northern Cardinal", "American Robin", "Anna's Hummingbird", "Blue Jay"],
        "partial",
        id="cut-off-last-item-counts-when-exact",
    ),
    pytest.param(
        "[American Robin, Northern Cardinal, Anna's Hummingbi",
        BIRDS,
        ["American Robin", "Northern Cardinal", "Blue Jay", "Anna's Hummingbird"],
        "partial",
        id="cut-off-last-item-is-not-guessed",
    ),
    pytest.param(
        "[Cat, Rat, Ba",
        ANIMALS,
        ["Cat", "Rat", "Bat"],
        "partial",
        id="cut-off-short-names",
    ),
    pytest.param(
        "Not American Robin.\n[[Blue Jay",
        BIRDS,
        ["Blue Jay", "Northern Cardinal", "Anna's Hummingbird", "American Robin"],
        "partial",
        id="cut-off-nested-list",
    ),
    pytest.param(
        "[Blue Jay, Anna's Humingbird]",
        BIRDS,
        ["Blue Jay", "Anna's Hummingbird", "Northern Cardinal", "American Robin"],
        "partial",
        id="closed-list-last-item-may-be-misspelt",
    ),
    # -- repeats and look-alikes ------------------------------------------------------------------
    pytest.param(
        "['Blue Jay', 'Blue Jey', 'American Robin']",
        BIRDS,
        ["Blue Jay", "American Robin", "Northern Cardinal", "Anna's Hummingbird"],
        "partial",
        id="misspelt-repeat-placed-once",
    ),
    pytest.param(
        "1. Blue Jay\n2. Blue Jay (again)\n3. American Robin",
        BIRDS,
        ["Blue Jay", "American Robin", "Northern Cardinal", "Anna's Hummingbird"],
        "partial",
        id="repeat-inside-a-longer-line-placed-once",
    ),
    pytest.param("['Jay Blue', 'Robin American']", BIRDS, list(BIRDS), "full", id="off-list-anagrams"),
    pytest.param(
        "['blue jay', 'Blue Jay']",
        ("Blue Jay", "blue_jay"),
        ["Blue Jay", "blue_jay"],
        "none",
        id="two-candidates-one-spelling",
    ),
    pytest.param(
        "The answer is Blue Jay.",
        ("Blue Jay", "Jay"),
        ["Blue Jay", "Jay"],
        "partial",
        id="longest-contained-name-listed-first",
    ),
    # -- no usable answer -------------------------------------------------------------------------
    pytest.param("[2, 1, 4, 3]", BIRDS, list(BIRDS), "full", id="indices-are-not-names"),
    pytest.param("None of these candidates match the image.", BIRDS, list(BIRDS), "full", id="refusal"),
]


@pytest.mark.parametrize(("text", "candidates", "order", "fallback"), ANSWERS)
def test_adversarial_answer(text: str, candidates: tuple[str, ...], order: list[str], fallback: str) -> None:
    parsed = parse_ranking(text, candidates)
    assert (parsed.order, parsed.fallback) == (order, fallback)
