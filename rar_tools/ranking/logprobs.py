"""Score-mode evidence read off an OpenAI-compatible endpoint's greedy path and its top logprobs.

An assistant prefix (`[`) cannot be forced portably over the chat-completions API, so the ranker
asks for one short greedy generation with `logprobs=true, top_logprobs=20`, and each candidate gets
the log-probability of the tokens that spell the start of its name as the first list item. The
candidate is followed along the greedy tokens for as long as it agrees with them; at the first
token where it departs, the listed alternatives that continue its name are summed. A candidate that
is a prefix of the greedy name ("Blue" under "Blue Jay") also pays the listed probability of the
item ending there. A candidate whose continuation is not among the listed alternatives gets the
unlisted probability mass, capped at the smallest listed one (an upper bound), and counts as "no
evidence". Pure functions over the response JSON: no HTTP, no models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rar_tools.limits import Fallback

SYNTAX_CHARS = " \t\r\n['\"`(*"
ITEM_END = "'\"`,;]\n"


@dataclass(frozen=True)
class Step:
    """One generated token, its log-probability, and the listed alternatives at that position."""

    token: str
    logprob: float
    alternatives: tuple[tuple[str, float], ...]


def logprob_steps(choice: dict) -> list[Step] | None:
    """The generated tokens with their alternatives, or None when the choice carries no logprobs.

    Reads the chat shape (`logprobs.content[*].top_logprobs`) and the legacy completions shape
    (`tokens`, `token_logprobs`, `top_logprobs` as dicts) that some servers still return."""
    data = choice.get("logprobs")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("content"), list):
        return [chat_step(entry) for entry in data["content"] if isinstance(entry, dict)]
    if isinstance(data.get("tokens"), list) and isinstance(data.get("token_logprobs"), list):
        tops = data.get("top_logprobs") or [{}] * len(data["tokens"])
        return [legacy_step(tok, lp, top) for tok, lp, top in zip(data["tokens"], data["token_logprobs"], tops)]
    return None


def chat_step(entry: dict) -> Step:
    """A Step from one chat-format logprobs entry."""
    token, logprob = str(entry.get("token", "")), float(entry.get("logprob", -math.inf))
    alts = [
        (str(a.get("token", "")), float(a.get("logprob", -math.inf)))
        for a in entry.get("top_logprobs") or []
        if isinstance(a, dict)
    ]
    return Step(token, logprob, with_greedy(alts, token, logprob))


def legacy_step(token: str, logprob: float | None, top: dict | None) -> Step:
    """A Step from one legacy completions-format position."""
    lp = -math.inf if logprob is None else float(logprob)
    alts = [(str(t), float(v)) for t, v in (top or {}).items()]
    return Step(str(token), lp, with_greedy(alts, str(token), lp))


def with_greedy(alts: list[tuple[str, float]], token: str, logprob: float) -> tuple:
    """The alternatives, with the generated token added when the server left it out."""
    if all(t != token for t, _ in alts):
        alts.append((token, logprob))
    return tuple(alts)


# --- score mode: candidate log-probabilities from one greedy path -----------------------------


def name_start(text: str) -> int | None:
    """Where the first list item's name begins in the generated text, or None."""
    begin = text.find("[")
    search_from = begin + 1 if begin >= 0 else 0
    if begin < 0 and text.lstrip().startswith("```"):
        newline = text.find("\n")
        search_from = newline + 1 if newline >= 0 else len(text)
    for index in range(search_from, len(text)):
        if text[index].isalnum():
            numbering = after_numbering(text, index)
            return numbering if numbering is not None else index
    return None


def after_numbering(text: str, index: int) -> int | None:
    """After a `1. ` or `2) ` list number starting at `index`, where the name begins; else None."""
    end = index
    while end < len(text) and text[end].isdigit():
        end += 1
    if end == index or end + 1 >= len(text) or text[end] not in ".)" or not text[end + 1].isspace():
        return None
    for after in range(end + 1, len(text)):
        if not text[after].isspace():
            return after
    return None


def locate(steps: list[Step], offset: int) -> tuple[int, int]:
    """(token index, offset inside that token) of character `offset` of the joined tokens."""
    seen = 0
    for index, step in enumerate(steps):
        if offset < seen + len(step.token):
            return index, offset - seen
        seen += len(step.token)
    return len(steps), 0


def continues(core: str, rest: str) -> bool:
    """Whether a token spelling `core` is consistent with a name whose unread part is `rest`."""
    if not core:
        return False
    if rest.startswith(core):
        return True
    return core.startswith(rest) and core[len(rest)] in ITEM_END


def closes_item(token: str) -> bool:
    """Whether a token ends the current list item (a quote, comma or bracket)."""
    return bool(token) and token[0] in ITEM_END


def ending_logprob(steps: list[Step], index: int) -> float:
    """Log-probability that the list item ends at step `index` (0 when the greedy path ends it)."""
    if index >= len(steps) or closes_item(steps[index].token):
        return 0.0
    ends = [lp for tok, lp in steps[index].alternatives if closes_item(tok)]
    return logsumexp(ends) if ends else unlisted_logprob(steps[index])


def unlisted_logprob(step: Step) -> float:
    """The unlisted probability mass at a step, capped at its smallest listed alternative."""
    listed = [lp for _, lp in step.alternatives]
    rest = max(1.0 - sum(math.exp(lp) for lp in listed), 1e-12)
    return min(math.log(rest), min(listed, default=0.0))


def candidate_logprob(name: str, steps: list[Step], skip: int) -> tuple[float, bool]:
    """(log-probability, evidence) of the greedy path spelling `name` as the first item.

    `steps[0]` starts at the name, `skip` characters into its token (list syntax before it)."""
    rest, total = name.casefold(), 0.0
    for index, step in enumerate(steps):
        core = (step.token[skip:] if index == 0 else step.token).casefold()
        if core and continues(core, rest):
            total += step.logprob
            if not rest.startswith(core):
                return total, True  # this token also closes the item
            rest = rest[len(core) :]
            if not rest:
                return total + ending_logprob(steps, index + 1), True
            continue
        alts = [lp for tok, lp in step.alternatives if continues(alt_core(tok, first=index == 0).casefold(), rest)]
        if alts:
            return total + logsumexp(alts), True
        return total + unlisted_logprob(step), index > 0
    return total, True


def alt_core(token: str, first: bool) -> str:
    """An alternative token's name part: leading list syntax stripped at the first position."""
    return token.lstrip(SYNTAX_CHARS) if first else token


def logsumexp(values: list[float]) -> float:
    """log(sum(exp(values))), stable."""
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def softmax(values: list[float]) -> list[float]:
    """Probabilities proportional to exp(values)."""
    total = logsumexp(values)
    if total == -math.inf:
        return [1.0 / len(values)] * len(values)
    return [math.exp(v - total) for v in values]


def score_candidates(names: list[str], steps: list[Step]) -> tuple[list[float], Fallback]:
    """Per-candidate log-scores from the greedy path, and how much of the order rests on them."""
    text = "".join(step.token for step in steps)
    start = name_start(text)
    if start is None:
        return [0.0] * len(names), "full"
    index, skip = locate(steps, start)
    scored = [candidate_logprob(name, steps[index:], skip) for name in names]
    with_evidence = sum(1 for _, evidence in scored if evidence)
    fallback: Fallback = "none" if with_evidence == len(names) else "partial" if with_evidence else "full"
    return [score for score, _ in scored], fallback
