"""Read an MLLM's region description: caption, attributes and a `phrase|category|parent` label.

The prompt asks for one JSON object. The parser is pure and never raises; it looks, in order:

1. for the first JSON object in the text (`{...}`, also with Python-style single quotes) and reads its
   `caption`, `attributes` (an object, or `key=value` text) and `label` keys;
2. for what it still lacks, at `key: value` lines (`caption: ...`, `colour: red`, `label: a|b|c`);
3. for a label still missing, at any `a|b` or `a|b|c` in the text; for a caption still missing, at the
   first sentence of prose of at least three words (outside braces and labels, not a `key: value` line).

`fallback` is "none" when all three came from the JSON object, "full" when none was found anywhere,
else "partial"; `missing` lists what was not found. Every value is data: control characters removed,
whitespace collapsed, lengths capped, as candidate names are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rar_tools.limits import MAX_ATTRIBUTES, MAX_CAPTION_CHARS, MAX_LABEL_CHARS, Fallback
from rar_tools.ranking.parsing import closed_literal
from rar_tools.ranking.prompts import clean_candidate

FIELDS = ("caption", "attributes", "label")
MAX_TEXT_CHARS = 20_000
MAX_TRIES = 40
MAX_ATTRIBUTE_CHARS = 60
MIN_CAPTION_WORDS = 3
KEY_ALIASES = {"color": "colour", "colours": "colour", "colors": "colour", "materials": "material"}
LINE = re.compile(r"^\s*[-*\"']*\s*([A-Za-z][A-Za-z ]{0,30}?)[\"']?\s*[:=]\s*(.+?)\s*,?\s*$")
PIPED = re.compile(r"([^|\n{}\[\]\"':.!?]{1,200})\|([^|\n{}\[\]\"']{1,200})(?:\|([^|\n{}\[\]\"']{1,200}))?")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class ProposedLabel:
    """DetCLIPv3's object label: a descriptive phrase, its category, and a coarser parent (or None)."""

    phrase: str
    category: str
    parent: str | None


@dataclass(frozen=True)
class ParsedDescription:
    caption: str | None
    attributes: dict[str, str]
    label: ProposedLabel | None
    fallback: Fallback
    missing: tuple[str, ...]


def clean(value: Any, limit: int) -> str | None:
    """A value as one line of plain text, capped at `limit` characters; None when empty."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None
    text = clean_candidate(str(value), limit).strip(" \"'`")
    return text or None


def parse_label(text: Any) -> ProposedLabel | None:
    """`phrase|category|parent` (or `phrase|category`, or a bare name) as a label."""
    if not isinstance(text, str):
        return None
    parts = [clean(part, MAX_LABEL_CHARS) for part in text.split("|")]
    parts = [part for part in parts if part]
    if not parts:
        return None
    phrase, category = parts[0], parts[1] if len(parts) > 1 else parts[0]
    return ProposedLabel(phrase, category, parts[2] if len(parts) > 2 else None)


def parse_attributes(value: Any) -> dict[str, str]:
    """An attributes object, or `key=value` / `key: value` pairs separated by commas or semicolons."""
    if isinstance(value, str):
        pairs = [re.split(r"\s*[=:]\s*", part, maxsplit=1) for part in re.split(r"[,;]", value)]
        value = {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
    if not isinstance(value, dict):
        return {}
    attributes: dict[str, str] = {}
    for key, raw in value.items():
        name, text = clean(key, MAX_ATTRIBUTE_CHARS), clean(raw, MAX_ATTRIBUTE_CHARS)
        if name and text and len(attributes) < MAX_ATTRIBUTES:
            name = name.casefold()
            attributes[KEY_ALIASES.get(name, name)] = text
    return attributes


def json_object(text: str) -> dict | None:
    """The first `{...}` in the text that reads as a JSON (or Python literal) object."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(MAX_TRIES):
        if start < 0:
            return None
        try:
            value, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            found = closed_literal(text, start, "}", dict)  # Python-style quotes
            value = found[0] if found else None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def keyed_lines(text: str) -> dict[str, str]:
    """`key: value` lines, keys case-folded (the first of each key wins)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            found.setdefault(match.group(1).strip().casefold(), match.group(2))
    return found


def line_values(lines: dict[str, str]) -> dict[str, Any]:
    """Caption, attributes and label from `key: value` lines."""
    attributes = parse_attributes(lines.get("attributes", ""))
    for key, value in lines.items():
        if KEY_ALIASES.get(key, key) in ("colour", "material", "state", "count"):
            attributes.update(parse_attributes({key: value}))
    return {
        "caption": clean(lines.get("caption"), MAX_CAPTION_CHARS),
        "attributes": attributes,
        "label": parse_label(lines.get("label")),
    }


def loose_label(text: str) -> ProposedLabel | None:
    """The first `a|b` or `a|b|c` anywhere in the text."""
    match = PIPED.search(text)
    return parse_label("|".join(part for part in match.groups() if part)) if match else None


def loose_caption(text: str) -> str | None:
    """The first sentence of prose with at least three words (starting with a letter): outside braces
    and labels, not a `key: value` line."""
    prose = PIPED.sub(" ", re.sub(r"\{[^{}]*\}", " ", text))
    for line in prose.splitlines():
        if LINE.match(line):
            continue
        for sentence in SENTENCE_END.split(line):
            if sum(word[0].isalpha() for word in sentence.split()) >= MIN_CAPTION_WORDS:
                return clean(sentence, MAX_CAPTION_CHARS)
    return None


def parse_description(text: Any) -> ParsedDescription:
    """Caption, attributes and label from the model's answer (see the module docstring)."""
    text = text[:MAX_TEXT_CHARS] if isinstance(text, str) else ""
    data = json_object(text) or {}
    structured = {
        "caption": clean(data.get("caption"), MAX_CAPTION_CHARS),
        "attributes": parse_attributes(data.get("attributes")),
        "label": parse_label(data.get("label")),
    }
    lines = line_values(keyed_lines(text))
    values = {name: structured[name] or lines[name] for name in FIELDS}
    values["label"] = values["label"] or loose_label(text)
    values["caption"] = values["caption"] or loose_caption(text)
    missing = tuple(name for name in FIELDS if not values[name])
    from_json = sum(bool(structured[name]) for name in FIELDS)
    fallback: Fallback = "none" if from_json == len(FIELDS) else "full" if len(missing) == len(FIELDS) else "partial"
    return ParsedDescription(values["caption"], values["attributes"], values["label"], fallback, missing)
