"""Ranking in several cyclic shifts of the candidate order, fused, against the ranker's position bias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.components import Components
from rar_tools.ranking.base import RankedLabel, RankerConfig, RankRequest, RankResult
from rar_tools.ranking.local import TransformersRanker
from rar_tools.ranking.parsing import rank_weights
from rar_tools.ranking.permutations import (
    borda,
    fused_fallback,
    mean_probabilities,
    rank_in_orders,
    shift_offsets,
    shifted,
)
from rar_tools.settings import Settings

NAMES = ("house sparrow", "song sparrow", "barn swallow", "blue jay", "northern cardinal")


def noisy_image(seed: int, size: tuple[int, int] = (150, 90)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def rotated(items: tuple, by: int) -> tuple:
    return items[by:] + items[:by]


@pytest.fixture(scope="module")
def model_dir(tiny_ranker_dirs: dict[str, Path]) -> str:
    return str(tiny_ranker_dirs["qwen2_vl"])


def ranker_with(model_dir: str, permutations: int, max_new_tokens: int = 24) -> TransformersRanker:
    config = RankerConfig(model=model_dir, device="cpu", permutations=permutations, max_new_tokens=max_new_tokens)
    return TransformersRanker(config)


def by_label(result: RankResult) -> dict[str, float]:
    return {item.label: item.score for item in result.ranked}


def test_shift_offsets_spread_evenly_and_never_repeat() -> None:
    assert shift_offsets(5, 1) == [0]
    assert shift_offsets(6, 3) == [0, 2, 4]
    assert shift_offsets(5, 5) == [0, 1, 2, 3, 4]
    assert shift_offsets(3, 10) == [0, 1, 2]


def test_exemplars_rotate_with_their_candidates() -> None:
    exemplars = (noisy_image(1), None, noisy_image(3))
    request = shifted(RankRequest(noisy_image(0), ("a", "b", "c"), exemplars=exemplars), 1)
    assert request.candidates == ("b", "c", "a")
    assert request.exemplars == (None, exemplars[2], exemplars[0])


def test_borda_gives_k_minus_one_minus_place_points_and_shares() -> None:
    first = RankResult([RankedLabel("a", 0), RankedLabel("b", 0), RankedLabel("c", 0)], "generate")
    second = RankResult([RankedLabel("b", 0), RankedLabel("a", 0), RankedLabel("c", 0)], "generate")
    fused = borda(("c", "b", "a"), [first, second])
    assert [(r.label, r.score) for r in fused] == [("b", 0.5), ("a", 0.5), ("c", 0.0)]  # the tie keeps input order


def test_mean_probabilities_average_per_label() -> None:
    first = RankResult([RankedLabel("a", 0.7), RankedLabel("b", 0.3)], "score")
    second = RankResult([RankedLabel("b", 0.9), RankedLabel("a", 0.1)], "score")
    assert [(r.label, round(r.score, 9)) for r in mean_probabilities(("a", "b"), [first, second])] == [
        ("b", 0.6),
        ("a", 0.4),
    ]


def test_fused_fallback_is_partial_unless_all_orders_agree() -> None:
    assert fused_fallback(["none", "none"]) == "none"
    assert fused_fallback(["full", "full"]) == "full"
    assert fused_fallback(["none", "full"]) == "partial"


def test_one_order_depends_on_the_input_order(model_dir: str) -> None:
    """Without permutations the shown order changes the probabilities: the bias the option removes."""
    ranker = ranker_with(model_dir, 1)
    first = by_label(ranker.rank(RankRequest(noisy_image(0), NAMES)))
    second = by_label(ranker.rank(RankRequest(noisy_image(0), rotated(NAMES, 2))))
    assert first != pytest.approx(second, abs=1e-6)


def test_k_orders_make_score_mode_independent_of_the_input_order(model_dir: str) -> None:
    ranker = ranker_with(model_dir, len(NAMES))
    results = [ranker.rank(RankRequest(noisy_image(0), rotated(NAMES, by))) for by in range(len(NAMES))]
    for result in results[1:]:
        assert by_label(result) == pytest.approx(by_label(results[0]), abs=1e-6)
        assert [r.label for r in result.ranked] == [r.label for r in results[0].ranked]
    assert results[0].timings["orders"] == len(NAMES)


def position_biased(quality: dict[str, float], bias: float):
    """A deterministic list ranker that favours the places it is shown first, as list-ranking LLMs do:
    a candidate's merit is its quality plus `bias` per place from the end of the shown list. It
    answers like generate mode: the order, with 1/rank weights as scores."""

    def rank_once(request: RankRequest) -> RankResult:
        shown = list(request.candidates)
        order = sorted(shown, key=lambda c: -(quality[c] + bias * (len(shown) - shown.index(c))))
        ranked = [RankedLabel(c, w) for c, w in zip(order, rank_weights(len(order)))]
        return RankResult(ranked, request.mode, raw_text=repr(order))

    return rank_once


@pytest.mark.parametrize("orders, independent", [(1, False), (len(NAMES), True)])
def test_k_orders_make_borda_scores_independent_of_the_input_order(orders: int, independent: bool) -> None:
    """Each candidate's fused Borda share is the same whichever rotation of the list comes in (only
    candidates with equal shares keep their input order)."""
    rank_once = position_biased(dict(zip(NAMES, (0.0, 2.0, 1.0, 4.0, 3.0))), bias=1.5)
    shares = []
    for by in range(len(NAMES)):
        request = RankRequest(noisy_image(0), rotated(NAMES, by), mode="generate")
        shares.append(by_label(rank_in_orders(rank_once, request, orders)))
    assert all(s == pytest.approx(shares[0], abs=1e-12) for s in shares) is independent


def test_generate_mode_ranks_each_order_and_keeps_every_answer(model_dir: str) -> None:
    """The tiny model's answers are noise (each falls back to its shown order), so this checks the
    mechanics: k generations, their raw answers in order, Borda shares summing to one."""
    ranker = ranker_with(model_dir, len(NAMES))
    result = ranker.rank(RankRequest(noisy_image(0), NAMES, mode="generate"))
    assert result.raw_text.count("--- next order ---") == len(NAMES) - 1
    assert sum(by_label(result).values()) == pytest.approx(1.0)
    assert result.timings["orders"] == len(NAMES)


def test_n_orders_cost_n_prompt_passes_not_n_times_k(model_dir: str) -> None:
    """Score mode runs the model twice per order: the prompt, then all candidates in one batch."""
    ranker = ranker_with(model_dir, 3)
    calls = []
    hook = ranker.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        ranker.rank(RankRequest(noisy_image(0), NAMES))
    finally:
        hook.remove()
    assert len(calls) == 2 * 3


def test_rank_permutations_setting_reaches_the_ranker(model_dir: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        ranker_model=model_dir,
        device="cpu",
        rank_permutations=4,
        score_normalisation="mean",
    )
    ranker = Components(settings).ranker
    assert (ranker.config.permutations, ranker.config.score_normalisation) == (4, "mean")
    assert ranker.rank(RankRequest(noisy_image(0), NAMES)).timings["orders"] == 4
