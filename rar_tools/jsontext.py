"""JSON from outside the process (an MCP client, a ranking endpoint, an archive, a user's file).

Python's `json` raises `RecursionError`, not `ValueError`, on arrays or objects nested past the
interpreter's recursion limit (a thousand bytes of `[`), so a caller that catches `ValueError` for
bad JSON let such a text escape as a crash. `parse_json` raises `ValueError` for every unreadable text;
`top_level_scalars` still finds a message's `id` in a text nested too deeply for any parser.
"""

from __future__ import annotations

import json
import re
from typing import Any


class NestedTooDeeply(ValueError):
    """JSON with arrays or objects nested past what Python's parser reads."""


def parse_json(text: str | bytes) -> Any:
    """The value of a JSON text; `ValueError` (with the reason) when it is not JSON, is not UTF-8,
    or nests too deeply to read (`NestedTooDeeply`)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise NestedTooDeeply("JSON nested too deeply to read") from None


STRUCTURE = re.compile(r'["{}\[\]:,]')
DECODER = json.JSONDecoder()


def top_level_scalars(text: str) -> dict[str, Any]:
    """The members of the JSON object `text` whose values are strings, numbers, booleans or null
    (a request's `id` and `method`, say), found without reading the nested values, so at any depth
    of nesting; {} when `text` is not an object. Best effort: reading stops where the text stops
    being JSON."""
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] != "{":
        return {}
    found: dict[str, Any] = {}
    depth, key, pos = 0, None, start
    try:
        while (match := STRUCTURE.search(text, pos)) is not None:
            at, char = match.start(), match.group()
            pos = at + 1
            if char == '"':  # a string, skipped whole (brackets inside it are text); at depth 1, a key
                value, pos = DECODER.raw_decode(text, at)
                if depth == 1:
                    key = value
            elif char == ":" and depth == 1 and key is not None:
                value_at = len(text) - len(text[pos:].lstrip())
                if text[value_at : value_at + 1] not in ("{", "["):
                    found[key], pos = DECODER.raw_decode(text, value_at)
                key = None
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    break
    except ValueError:
        pass
    return found
