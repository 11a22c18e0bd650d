"""Score mode reads each candidate in the tokens the model would see it written in: the prompt and the
candidate tokenised together (joint tokenisation), whatever the family's tokenizer merges."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rar_tools.errors import RankerError
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.continuations import item_text, joint_continuation, lead_tokens, reduce_logprobs
from rar_tools.ranking.local import TransformersRanker, chat_messages

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "gemma3")
# Spaces, hyphens, apostrophes (repr then quotes with "), digits, non-ASCII, quotes and brackets.
NAMES = (
    "Herring Gull",
    "Black-footed Albatross",
    "O'Brien's warbler",
    "Laysan 2",
    "Crème brûlée",
    "Ōtani",
    '"quoted" owl',
    "(unknown) bird",
)


def noisy_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(90, 150, 3), dtype=np.uint8))


def request_for(candidates=NAMES, **kwargs) -> RankRequest:
    return RankRequest(image=noisy_image(), candidates=tuple(candidates), **kwargs)


@pytest.fixture(scope="module")
def rankers(tiny_ranker_dirs: dict[str, Path]) -> dict[str, TransformersRanker]:
    return {f: TransformersRanker(RankerConfig(model=str(tiny_ranker_dirs[f]), device="cpu")) for f in FAMILIES}


@pytest.fixture(scope="module")
def qwen(rankers) -> TransformersRanker:
    return rankers["qwen2_vl"]


def processor_ids(ranker: TransformersRanker, request: RankRequest, opening: str) -> list[int]:
    """The processor's own tokenisation of the ranking prompt with the assistant's answer opened by `opening`."""
    _, parts = ranker._parts(request)
    return ranker._encode(chat_messages(parts, opening))["input_ids"][0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_scored_tokens_are_the_processors_own_tokens_of_prompt_and_candidate(rankers, family: str) -> None:
    """Regression: before joint tokenisation the candidate was encoded apart (`[` then `'Her...`)."""
    ranker = rankers[family]
    request = request_for()
    for name, (kept, scored) in zip(NAMES, ranker.scored_sequences(request)):
        assert kept + scored == processor_ids(ranker, request, "[" + item_text(name)), name
        assert ranker.tokenizer.decode(scored).endswith(item_text(name)), name


def test_the_opening_bracket_merges_into_a_quoted_first_token(qwen) -> None:
    """The tiny Qwen tokenizer has `['`: the bracket leaves the prompt and starts the candidate."""
    prompt = processor_ids(qwen, request_for(), "[")
    kept, scored = qwen.scored_sequences(request_for())[0]
    assert kept == prompt[:-1]
    assert qwen.tokenizer.convert_ids_to_tokens(scored[0]) == "['"


def test_a_double_quoted_name_keeps_the_bracket_in_the_prompt(qwen) -> None:
    """repr quotes a name holding an apostrophe with `"`, which the tiny vocabulary does not merge with `[`."""
    prompt = processor_ids(qwen, request_for(), "[")
    kept, scored = qwen.scored_sequences(request_for())[NAMES.index("O'Brien's warbler")]
    assert kept == prompt
    assert qwen.tokenizer.decode(scored) == item_text("O'Brien's warbler")


def test_the_item_ends_with_the_list_separator(qwen) -> None:
    """The closing quote is scored as the model writes it before the next item (`',`), not alone."""
    _, scored = qwen.scored_sequences(request_for())[0]
    assert qwen.tokenizer.convert_ids_to_tokens(scored[-1]) == "',"


def test_split_tokenisation_scores_other_tokens(tiny_ranker_dirs) -> None:
    """The benchmark's comparison mode (today's way before joint tokenisation) really differs."""
    split = TransformersRanker(RankerConfig(model=str(tiny_ranker_dirs["qwen2_vl"]), device="cpu", joint_tokens=False))
    kept, scored = split.scored_sequences(request_for())[0]
    assert kept + scored != processor_ids(split, request_for(), "[" + item_text(NAMES[0]))
    assert split.tokenizer.convert_ids_to_tokens(scored[:2]) == ["'", "Her"]


@pytest.mark.parametrize("normalisation", ["sum", "mean", "first"])
def test_cached_scores_equal_uncached_scores_for_each_normalisation(tiny_ranker_dirs, normalisation: str) -> None:
    config = RankerConfig(model=str(tiny_ranker_dirs["qwen3_vl"]), device="cpu", score_normalisation=normalisation)
    ranker = TransformersRanker(config)
    cached = torch.tensor(ranker.candidate_scores(request_for()))
    assert torch.allclose(cached, torch.tensor(ranker.score_without_cache(request_for())), atol=1e-4, rtol=0)


def test_normalisations_relate_as_sum_mean_and_first(tiny_ranker_dirs) -> None:
    """On one model: mean = sum / token count, first = the lead tokens' sum, each <= 0."""
    path = str(tiny_ranker_dirs["qwen2_vl"])
    scores = {
        n: TransformersRanker(RankerConfig(model=path, device="cpu", score_normalisation=n)).candidate_scores(
            request_for()
        )
        for n in ("sum", "mean", "first")
    }
    lengths = [
        len(scored) for _, scored in TransformersRanker(RankerConfig(model=path)).scored_sequences(request_for())
    ]
    assert scores["mean"] == pytest.approx([s / n for s, n in zip(scores["sum"], lengths)], abs=1e-5)
    assert all(s <= f <= 0 for s, f in zip(scores["sum"], scores["first"]))


def test_reduce_logprobs_by_normalisation() -> None:
    logprobs = [-1.0, -0.5, -0.25, -0.25]
    assert reduce_logprobs(logprobs, 2, "sum") == -2.0
    assert reduce_logprobs(logprobs, 2, "mean") == -0.5
    assert reduce_logprobs(logprobs, 2, "first") == -1.5
    with pytest.raises(RankerError, match="unknown score normalisation"):
        reduce_logprobs(logprobs, 2, "max")


def test_lead_tokens_reach_the_first_character_of_the_name(qwen) -> None:
    """First-token normalisation scores `['` + `Her`: up to the first token holding a name character,
    counting a character split over byte tokens whole (Ō is two tokens in the tiny vocabulary)."""
    for name, lead in (("Herring Gull", 2), ("Ōtani", 3)):
        ids = qwen.tokenizer("[" + item_text(name), add_special_tokens=False).input_ids
        assert lead_tokens(ids, name, qwen.tokenizer.decode) == lead


def test_joint_continuation_splits_at_the_longest_common_prefix() -> None:
    decode = "".join  # token ids stand for themselves here
    cont = joint_continuation(["a", "b", "["], ["a", "b", "['", "x", "',"], "x", decode)
    assert (cont.ids, cont.back, cont.lead) == (("['", "x", "',"), 1, 2)


def test_score_mode_probabilities_still_sum_to_one_with_joint_tokens(rankers) -> None:
    for ranker in rankers.values():
        result = ranker.rank(request_for(NAMES[:5]))
        assert math.isclose(sum(r.score for r in result.ranked), 1.0, abs_tol=1e-9)
        assert {"encode_s", "prefix_s", "candidates_s", "total_s"} <= set(result.timings)
