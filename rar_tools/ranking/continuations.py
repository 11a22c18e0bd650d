"""Score mode's candidates as the tokens a model would read them in: joint tokenisation.

A model is trained on whole texts, tokenised in one go. Byte-level and SentencePiece BPEs merge
characters across the point where the prompt ends and a candidate begins: with the project's tiny
Qwen tokenizer (Qwen's own vocabulary also has `['`), `[` followed by `'Herring Gull',` is `['` `Her`
`ring` ... `',`, not `[` `'` `Her` ... Scoring
a candidate's tokens encoded apart from the prompt asks the model for a sequence it never saw, gives
every candidate a shared low-probability opening token, and (with per-token means) turns that
shared penalty into a bias toward long names.

So each candidate is scored the way evaluation harnesses score a continuation: the prompt (ending in
the answer's opening `[`) and the prompt followed by the candidate's list item are tokenised whole,
the longest common prefix of the two is kept as the context, and everything after it is the
candidate's continuation. Where a merge reaches back into the prompt (`[` became `['`), the
continuation starts that many tokens earlier (`back`) and includes the merged token; the ranker
then re-scores from the last shared token, whose KV cache the prompt pass holds.

A candidate's list item is its `repr` followed by the item separator `,`, so that its closing quote
is tokenised as a model writes it (`',` rather than a lone `'`) and no candidate is a prefix of
another. Pure functions over token ids: no torch, no tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rar_tools.errors import RankerError
from rar_tools.limits import ScoreNormalisation

ANSWER_OPENING = "["
ITEM_END = ","


@dataclass(frozen=True)
class Continuation:
    """One candidate as the tokens that continue the prompt.

    `back`: how many of the prompt's last tokens the candidate's tokenisation replaces (0 when nothing
    merges across the boundary). `ids`: the tokens after the kept prompt, all of them scored. `lead`:
    how many of `ids` it takes to spell the opening and the candidate's first character (what
    first-token normalisation scores)."""

    ids: tuple[int, ...]
    back: int
    lead: int


def item_text(name: str) -> str:
    """A candidate as the first item of the answer list writes it, after the opening `[`."""
    return repr(name) + ITEM_END


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token sequences."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def joint_continuation(context: Sequence[int], joint: Sequence[int], name: str, decode: Callable) -> Continuation:
    """The continuation of `context` (the prompt's ids) in `joint` (the ids of prompt + the item of `name`)."""
    kept = common_prefix(context, joint)
    ids = tuple(joint[kept:])
    if not ids:
        raise RankerError(f"the candidate {name!r} adds no tokens to the prompt")
    return Continuation(ids=ids, back=len(context) - kept, lead=lead_tokens(ids, name, decode))


def split_continuation(ids: Sequence[int], name: str, decode: Callable) -> Continuation:
    """A candidate's item tokenised on its own, after the unchanged prompt: the score mode before
    joint tokenisation, kept so that the benchmark can compare the two."""
    return Continuation(ids=tuple(ids), back=0, lead=lead_tokens(ids, name, decode))


def lead_tokens(ids: Sequence[int], name: str, decode: Callable[[Sequence[int]], str]) -> int:
    """How many of `ids` spell the item's opening quote and the name's first character."""
    start = repr(name)[:2]
    for count in range(1, len(ids) + 1):
        if start in decode(ids[:count]):
            return count
    return len(ids)


def reduce_logprobs(logprobs: Sequence[float], lead: int, normalisation: ScoreNormalisation) -> float:
    """One candidate's score from its tokens' log-probabilities.

    `sum`: the log-probability of the whole item, the model's probability of writing exactly this
    candidate first; `mean`: per token; `first`: of its first `lead` tokens only."""
    if normalisation == "sum":
        return float(sum(logprobs))
    if normalisation == "mean":
        return float(sum(logprobs) / len(logprobs))
    if normalisation == "first":
        return float(sum(logprobs[:lead]))
    raise RankerError(f"unknown score normalisation {normalisation!r}: use sum, mean or first")
