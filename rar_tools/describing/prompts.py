"""The description request: the views, then one instruction asking for a JSON answer."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from rar_tools.ranking.messages import ImagePart, Part, TextPart, downscale

ANSWER_FORMAT = (
    '{"caption": "one sentence about the object in its surroundings", '
    '"attributes": {"colour": "...", "material": "...", "state": "...", "count": "..."}, '
    '"label": "phrase|category|parent category"}'
)
INSTRUCTION = (
    "Describe the object in the first image{context}. Answer with one JSON object and nothing else, in this "
    "form: " + ANSWER_FORMAT + ". The label names the object with a short phrase, its category and a coarser "
    'parent category, separated by "|", e.g. "a goat holding flowers|goat|animal".'
)
CONTEXT = (
    "; the other images show it inside a red ellipse, in its surroundings. Read the attributes from the first "
    "image and write the caption from the others"
)


def description_prompt(context_views: int) -> str:
    """The instruction for a tight view followed by `context_views` marked context views."""
    return INSTRUCTION.replace("{context}", CONTEXT if context_views else "")


def description_parts(views: Sequence[Image.Image], max_side: int) -> list[Part]:
    """The user turn: every view (tight first, at most `max_side` pixels a side), then the instruction."""
    parts: list[Part] = [ImagePart(downscale(view, max_side)) for view in views]
    parts.append(TextPart(description_prompt(len(views) - 1)))
    return parts
