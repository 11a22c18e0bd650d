"""Turn an MLLM's answer to the RAR ranking prompt into an order over the candidates.

The function here is pure: the answer text and the candidates fully decide the result, so no
answer can leak into the next call (the reference code silently reused the previous answer when
a reply had no brackets).

Where the names come from, in order of preference:
1. A bracketed list, `[...]`: the first one in the text that names at least one candidate
   (so an echoed format example like `['category A', ...]` is skipped). It is read with
   `ast.literal_eval` when it is a valid literal, else split on quoted items or commas. A list cut
   off by `max_new_tokens` (no closing `]`) counts; its unfinished last item must match exactly.
2. Otherwise lines (numbered or bulleted lists such as `1. Blue Jay`), each tried whole and then
   split on commas and semicolons, which also covers comma-separated prose.

How a name is matched to a candidate (`normalise` first: case-folding, `_`/`-` to spaces,
collapsed whitespace, quotes, backticks, asterisks, numbering and trailing punctuation removed):
1. exactly, to the first candidate with the same normalised text not yet placed; a name that
   exactly repeats an already placed candidate is a duplicate and is dropped;
2. fuzzily, to the closest candidate by `difflib` ratio when that ratio is at least
   `FUZZY_THRESHOLD` (0.85), the closest is unique, and it is not yet placed;
3. by containment, when the name contains a candidate's whole normalised text on word
   boundaries (`1. Blue Jay (most likely)`), that candidate is the only one contained (or contains
   every other contained one, as `blue jay` contains `jay`), and it is not yet placed.
Names matching nothing are dropped. Candidates the model left out follow in their given
(retrieval) order.
"""

from __future__ import annotations

import ast
import difflib
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rar_tools.ranking.base import Fallback, RankedLabel, RankResult

FUZZY_THRESHOLD = 0.85
"""Smallest `difflib.SequenceMatcher` ratio for a near-miss spelling ("blue jey" vs "blue jay"
is 0.875; "cat" vs "bat" is 0.67)."""

MAX_TEXT_CHARS = 100_000
MAX_SEGMENTS = 20
MAX_CLOSE_TRIES = 50
MAX_ITEMS = 500
MAX_FUZZY_CHARS = 400
MAX_LITERAL_CHARS = 50_000

QUOTE_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00b4": "'"})
EDGE_CHARS = " \t'\"`*"
TRAILING_CHARS = EDGE_CHARS + ".,;:!?"
NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):]\)?|#\d{1,3}[.:)]?|[-*+\u2022>])\s*")
QUOTED_ITEM = re.compile(r"""(['"`])(.*?)\1(?=\s*(?:[,;\]\n]|$))""", re.DOTALL)
ITEM_SPLIT = re.compile(r"[,;\n]")
QUOTE_START = ("'", '"', "`")


@dataclass(frozen=True)
class ParsedRanking:
    """Every candidate exactly once, best first, in the caller's spelling.

    `matched` counts the candidates placed from the model's text; `fallback` is "none" when that
    is all of them, "partial" when some, "full" when none (then `order` is the input order).
    """

    order: list[str]
    fallback: Fallback
    matched: int


@dataclass(frozen=True)
class Item:
    """One name read from the answer; `exact_only` marks an unfinished last item."""

    text: str
    exact_only: bool = False


def parse_ranking(text: str, candidates: Sequence[str]) -> ParsedRanking:
    """Order `candidates` by the model's answer `text`; never raises on any text."""
    names = list(candidates)
    if not isinstance(text, str):  # an endpoint's empty reply can arrive as None
        return assemble(names, [])
    keys = [normalise(name) for name in names]
    matches = (match_items(items, keys) for items in item_sources(text[:MAX_TEXT_CHARS]))
    return assemble(names, next((picked for picked in matches if picked), []))


def assemble(names: list[str], picked: list[int]) -> ParsedRanking:
    """The picked candidates first, then the rest in their given order."""
    chosen = set(picked)
    order = [names[i] for i in picked] + [n for i, n in enumerate(names) if i not in chosen]
    if names and len(picked) == len(names):
        fallback: Fallback = "none"
    elif picked:
        fallback = "partial"
    else:
        fallback = "full"
    return ParsedRanking(order=order, fallback=fallback, matched=len(picked))


def normalise(name: str) -> str:
    """The form names are compared in: case-folded, plain spaces, no decoration."""
    text = unicodedata.normalize("NFKC", name).translate(QUOTE_MAP).casefold()
    text = NUMBERING.sub("", text.strip(EDGE_CHARS))  # anchored at the start: at most one match
    text = " ".join(text.replace("_", " ").replace("-", " ").split())
    return text.strip(EDGE_CHARS).rstrip(TRAILING_CHARS).strip()


# --- where the names come from -------------------------------------------------------------


def item_sources(text: str) -> Iterator[list[Item]]:
    """Candidate item lists, best source first: each bracketed list, then the lines."""
    text = text.translate(QUOTE_MAP)
    yield from bracket_lists(text)
    yield line_items(text)


def bracket_lists(text: str) -> Iterator[list[Item]]:
    """The items of each `[...]` in the text, in order of appearance."""
    start = text.find("[")
    for _ in range(MAX_SEGMENTS):
        if start < 0:
            return
        items, end = read_bracket(text, start)
        yield items
        start = text.find("[", end)


def read_bracket(text: str, start: int) -> tuple[list[Item], int]:
    """The items of the list opening at `start`, and where reading stopped."""
    close = text.find("]", start)
    if close == -1:
        return split_items(text[start + 1 :], cut_off=True), len(text)
    literal = literal_list(text, start)
    if literal is not None:
        return literal
    return split_items(text[start + 1 : close]), close + 1


def literal_list(text: str, start: int) -> tuple[list[Item], int] | None:
    """The list at `start` if some `]` closes a valid Python literal there, else None."""
    found = closed_literal(text, start, "]", list)
    return ([Item(s) for s in flatten(found[0])], found[1]) if found else None


def closed_literal(text: str, start: int, closer: str, kind: type) -> tuple[object, int] | None:
    """The Python literal opening at `start` and closed by the first later `closer` that makes it valid,
    with where it ends, if it is a `kind`; else None."""
    close = text.find(closer, start + 1)
    for _ in range(MAX_CLOSE_TRIES):
        if close == -1 or close - start > MAX_LITERAL_CHARS:
            return None
        try:
            value = ast.literal_eval(text[start : close + 1])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            close = text.find(closer, close + 1)
            continue
        return (value, close + 1) if isinstance(value, kind) else None
    return None


def flatten(value: list | tuple) -> list[str]:
    """Strings and numbers of a literal list, one nesting level deep (`[['a', 'b']]`)."""
    out: list[str] = []
    for element in value:
        if isinstance(element, (list, tuple)):
            out.extend(str(e) for e in element if isinstance(e, (str, int, float)))
        elif isinstance(element, (str, int, float)):
            out.append(str(element))
    return out


def split_items(body: str, cut_off: bool = False) -> list[Item]:
    """Items of a list body that is not a valid literal: quoted items (each complete, with its
    closing quote), else comma-separated; of a list `cut_off` before its `]`, the last comma-separated
    item may be cut short, so it must match exactly."""
    if body.lstrip().startswith(QUOTE_START):
        quoted = [Item(m.group(2)) for m in QUOTED_ITEM.finditer(body)]
        if quoted:
            return quoted
    items = [Item(part) for part in ITEM_SPLIT.split(body.replace("[", " "))]
    if cut_off:
        items[-1] = Item(items[-1].text, exact_only=True)
    return items


def line_items(text: str) -> list[Item]:
    """Each non-empty line whole, then its comma/semicolon parts (numbered lists, prose)."""
    items: list[Item] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        items.append(Item(line))
        parts = re.split(r"[,;]", line)
        if len(parts) > 1:
            items.extend(Item(part) for part in parts)
    return items


# --- matching ------------------------------------------------------------------------------


def match_items(items: list[Item], keys: list[str]) -> list[int]:
    """Candidate indices named by `items`, in order, each at most once."""
    used: list[int] = []
    for item in items[:MAX_ITEMS]:
        key = normalise(item.text)
        if not key:
            continue
        index = match_one(key, keys, set(used), item.exact_only)
        if index is not None:
            used.append(index)
    return used


def match_one(key: str, keys: list[str], used: set[int], exact_only: bool) -> int | None:
    """The candidate `key` names, or None (no match, ambiguous, or a duplicate)."""
    exact = [i for i, k in enumerate(keys) if k == key]
    if exact:
        return next((i for i in exact if i not in used), None)
    if exact_only:
        return None
    index = fuzzy_match(key, keys)
    if index is None:
        index = containment_match(key, keys)
    return index if index is not None and index not in used else None


def fuzzy_match(key: str, keys: list[str]) -> int | None:
    """The unique closest candidate with ratio >= FUZZY_THRESHOLD, else None."""
    if len(key) > MAX_FUZZY_CHARS:
        return None
    best: list[int] = []
    best_ratio = FUZZY_THRESHOLD
    for i, k in enumerate(keys):
        matcher = difflib.SequenceMatcher(None, key, k, autojunk=False)
        if matcher.real_quick_ratio() < best_ratio or matcher.quick_ratio() < best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio or (ratio == best_ratio and not best):
            best, best_ratio = [i], ratio
        elif ratio == best_ratio:
            best.append(i)
    return best[0] if len(best) == 1 else None


def containment_match(key: str, keys: list[str]) -> int | None:
    """The one candidate whose whole name appears in `key` on word boundaries, else None."""
    inside = [i for i, k in enumerate(keys) if k and contains_words(key, k)]
    if not inside:
        return None
    longest = max(inside, key=lambda i: len(keys[i]))
    if all(contains_words(keys[longest], keys[i]) for i in inside):
        return longest
    return None


def contains_words(text: str, part: str) -> bool:
    """Whether `part` occurs in `text` not glued to other letters or digits."""
    return re.search(r"(?<!\w)" + re.escape(part) + r"(?!\w)", text) is not None


def rank_weights(n: int) -> list[float]:
    """Weights 1/rank for ranks 1..n, normalised to sum to 1."""
    raw = [1.0 / r for r in range(1, n + 1)]
    return [w / sum(raw) for w in raw]


def generated_ranking(
    text: str, names: Sequence[str], candidates: Sequence[str], timings: dict[str, float]
) -> RankResult:
    """A generate-mode result: `text` parsed against the shown `names`, reported with the caller's
    original `candidates` spelling and 1/rank weights as scores."""
    parsed = parse_ranking(text, names)
    original = dict(zip(names, candidates))
    weights = rank_weights(len(parsed.order))
    ranked = [RankedLabel(original[n], w) for n, w in zip(parsed.order, weights)]
    return RankResult(ranked=ranked, mode="generate", fallback=parsed.fallback, raw_text=text, timings=timings)
