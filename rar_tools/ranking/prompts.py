"""The RAR ranking prompt, with candidate names treated strictly as quoted data."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from rar_tools.errors import RankerError

# The bounds live in rar_tools.limits; re-exported here for callers that import them from prompts.
from rar_tools.limits import MAX_CANDIDATES as MAX_CANDIDATES
from rar_tools.limits import MAX_EXEMPLAR_IMAGES as MAX_EXEMPLAR_IMAGES
from rar_tools.limits import MAX_LABEL_CHARS
from rar_tools.limits import MIN_CANDIDATES as MIN_CANDIDATES

MAX_CANDIDATE_CHARS = MAX_LABEL_CHARS  # a candidate is a label

RANKING_PROMPT = (
    "Please play the role of a classification expert, and sort the provided categories from high "
    "to low according to the top {k} similarity with the input image. "
    "Here are the optional categories:{names}."
)

ICL_INSTRUCTION = (
    " Your answer should follow the following format, like:['category A', 'category B', ...]. "
    "Only choose {k} categories, and no further information."
)

# One worked example for the in-context variant: a fixed, neutral illustration of the answer
# format (not a claim about any image shown to the model).
ICL_EXAMPLE_NAMES = ("golden retriever", "labrador retriever", "cocker spaniel")
ICL_EXAMPLE_ANSWER = "['golden retriever', 'labrador retriever', 'cocker spaniel']"

EXEMPLAR_INTRO = (
    " After the input image, one reference image is shown for some categories, each introduced by its quoted name."
)


CONTEXT_INTRO = (
    " The first image shows the object to classify; the second shows it, inside a red ellipse, in the whole picture."
)


def clean_candidate(name: str, limit: int = MAX_CANDIDATE_CHARS) -> str:
    """Collapse whitespace, drop control characters and cap the length (of one candidate name)."""
    chars = [" " if ch.isspace() else ch for ch in name]
    kept = "".join(ch for ch in chars if unicodedata.category(ch)[0] != "C")
    return " ".join(kept.split())[:limit]


def format_names(names: list[str] | tuple[str, ...]) -> str:
    """A Python-style list literal of the names; `repr` quotes and escapes each one."""
    return repr([clean_candidate(n) for n in names])


def request_prompt(names: list[str] | tuple[str, ...], icl: bool, context: bool, exemplars: bool) -> str:
    """The ranking instruction, plus a note on a context image and on exemplar images when shown."""
    return ranking_prompt(names, icl=icl) + (CONTEXT_INTRO if context else "") + (EXEMPLAR_INTRO if exemplars else "")


def ranking_prompt(names: list[str] | tuple[str, ...], icl: bool = False) -> str:
    """The paper's ranking instruction for `names` (optionally with the ICL format example)."""
    k = len(names)
    text = RANKING_PROMPT.format(k=k, names=format_names(names))
    if icl:
        example = RANKING_PROMPT.format(k=len(ICL_EXAMPLE_NAMES), names=format_names(ICL_EXAMPLE_NAMES))
        text = (
            "Example question: "
            + example
            + "\nExample answer: "
            + ICL_EXAMPLE_ANSWER
            + "\n\n"
            + text
            + ICL_INSTRUCTION.format(k=k)
        )
    return text


def shown_names(candidates: Sequence[str]) -> list[str]:
    """The candidates as the prompt shows them (cleaned); refuses empty, duplicate or too many."""
    if not 1 <= len(candidates) <= MAX_CANDIDATES:
        raise RankerError(f"give between 1 and {MAX_CANDIDATES} candidates, got {len(candidates)}")
    names = [clean_candidate(c) for c in candidates]
    if not all(names):
        raise RankerError("a candidate name is empty once whitespace and control characters are removed")
    if len(set(names)) != len(names):
        raise RankerError("candidate names must be distinct (after whitespace clean-up)")
    return names
