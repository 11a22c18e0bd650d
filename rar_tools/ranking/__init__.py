"""Ranking backends behind one interface: a local transformers MLLM or an OpenAI-compatible API."""

from __future__ import annotations

from rar_tools.errors import RankerError
from rar_tools.ranking.base import RankedLabel, Ranker, RankerConfig, RankMode, RankRequest, RankResult


def create_ranker(config: RankerConfig) -> Ranker:
    """An endpoint ranker when `config.url` is set, else a local transformers model."""
    if config.url:
        if config.adapter:
            raise RankerError(
                "--ranker-adapter applies to a local ranker model; an endpoint serves its own adapters "
                "(vLLM: --enable-lora --lora-modules NAME=FOLDER, then --ranker-api-model NAME; docs/finetune.md)"
            )
        from rar_tools.ranking.openai_compat import OpenAICompatRanker

        return OpenAICompatRanker(config)
    from rar_tools.ranking.local import TransformersRanker

    return TransformersRanker(config)


__all__ = ["RankMode", "RankRequest", "RankResult", "RankedLabel", "Ranker", "RankerConfig", "create_ranker"]
