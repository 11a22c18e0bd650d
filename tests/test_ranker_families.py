"""Every supported ranker family, as a tiny random checkpoint loaded through the Auto classes like a real
one: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (3-D mrope positions), LLaVA-1.5 and Gemma 3 (plain positions,
sliding-window layers). Score mode must continue each family's own position scheme and cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rar_tools.errors import RankerError
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import SINGLE_IMAGE_FAMILIES, TransformersRanker

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "gemma3")
MULTI_IMAGE = tuple(f for f in FAMILIES if f not in SINGLE_IMAGE_FAMILIES)
MROPE = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
NAMES = ("house sparrow", "song sparrow", "barn swallow", "blue jay", "northern cardinal")


def noisy_image(seed: int, size: tuple[int, int] = (150, 90)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def rankers(tiny_ranker_dirs: dict[str, Path]) -> dict[str, TransformersRanker]:
    return {
        family: TransformersRanker(RankerConfig(model=str(path), device="cpu"))
        for family, path in tiny_ranker_dirs.items()
    }


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def request_for(**kwargs) -> RankRequest:
    return RankRequest(image=noisy_image(0), candidates=NAMES, **kwargs)


def exemplars() -> tuple[Image.Image | None, ...]:
    return tuple(noisy_image(i + 1, (60 + 20 * i, 80)) if i != 2 else None for i in range(len(NAMES)))


def test_each_family_loads_through_the_auto_classes(rankers, family: str) -> None:
    ranker = rankers[family]
    assert ranker.family == family
    assert ranker.model.config.architectures[0].endswith("ForConditionalGeneration")


def test_cached_scores_equal_uncached_scores_in_each_family(rankers, family: str) -> None:
    ranker = rankers[family]
    cached = torch.tensor(ranker.candidate_scores(request_for()))
    assert torch.allclose(cached, torch.tensor(ranker.score_without_cache(request_for())), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", MULTI_IMAGE)
def test_cached_scores_stay_exact_with_exemplar_and_context_images(rankers, family: str) -> None:
    ranker = rankers[family]
    request = request_for(exemplars=exemplars(), context=noisy_image(9, (80, 60)))
    cached = torch.tensor(ranker.candidate_scores(request))
    assert torch.allclose(cached, torch.tensor(ranker.score_without_cache(request)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", MROPE)
def test_mrope_families_continue_positions_after_the_image_delta(rankers, family: str, monkeypatch) -> None:
    """Continuation positions one step off change every score: the cached = uncached check has teeth."""
    ranker = rankers[family]
    uncached = torch.tensor(ranker.score_without_cache(request_for()))
    right = ranker._continuation_positions
    monkeypatch.setattr(ranker, "_continuation_positions", lambda *a: right(*a) + 1)
    assert not torch.allclose(torch.tensor(ranker.candidate_scores(request_for())), uncached, atol=1e-2, rtol=0)


def test_the_kv_cache_goes_through_the_current_api(rankers, family: str) -> None:
    """transformers deprecates `past_key_values` (removed in 5.40) for `cache`: no FutureWarning here."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        rankers[family].candidate_scores(request_for())
        rankers[family].rank(request_for(mode="generate"))


def test_gemma3_continues_plain_positions(rankers) -> None:
    ranker = rankers["gemma3"]
    positions = ranker._continuation_positions(ranker._score_inputs(request_for())[0], 40, 3, 2)
    assert positions.tolist() == [[40, 41, 42], [40, 41, 42]]


def test_gemma3_sliding_window_is_shorter_than_the_prompt(rankers) -> None:
    """The tiny Gemma 3 keeps a 16-token window, so its cached scores above cross the window edge."""
    ranker = rankers["gemma3"]
    prompt_length = ranker._score_inputs(request_for())[0]["input_ids"].shape[1]
    assert ranker.model.config.text_config.sliding_window < prompt_length


@pytest.mark.parametrize("family", MULTI_IMAGE)
def test_multi_image_families_show_every_exemplar(rankers, family: str) -> None:
    ranker = rankers[family]
    image_token = ranker.model.config.image_token_id
    plain = ranker._score_inputs(request_for())[0]["input_ids"]
    shown = ranker._score_inputs(request_for(exemplars=exemplars()))[0]["input_ids"]
    assert int((shown == image_token).sum()) > int((plain == image_token).sum())
    assert len(ranker.rank(request_for(mode="generate", exemplars=exemplars())).ranked) == len(NAMES)


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_each_family_ranks_every_candidate_once(rankers, family: str, mode: str) -> None:
    result = rankers[family].rank(request_for(mode=mode))
    assert sorted(r.label for r in result.ranked) == sorted(NAMES)


def test_single_image_families_refuse_exemplars_by_name(rankers) -> None:
    with pytest.raises(RankerError, match="multi-image family"):
        rankers["llava"].rank(request_for(exemplars=exemplars()))
