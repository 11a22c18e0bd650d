"""Teach the ranker a memory's vocabulary: RAR's ranking-format fine-tuning data, LoRA fine-tuning, adapters.

- `data`: `export_ranking_data`, chat-format JSON Lines from a memory (or a labelled data set), leave-one-out.
- `samples`: one sample in the qwen / llava / openai layouts, written and read back.
- `train`: `finetune_ranker`, LoRA (peft) on the language model's projections, loss on the answer only.
- `checkpoints`: the run's checkpoints and resuming from them.

Loading an adapter onto the ranker (`--ranker-adapter`) is the ranker's job: `rar_tools.ranking.adapters`.

Importing this package is light (no torch, no peft): each entry point imports its libraries when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rar_tools.finetune.data import RankingDataConfig, RankingDataSummary, export_ranking_data
    from rar_tools.finetune.train import FinetuneConfig, FinetuneResult, finetune_ranker

LAZY = {
    "RankingDataConfig": "data",
    "RankingDataSummary": "data",
    "export_ranking_data": "data",
    "FinetuneConfig": "train",
    "FinetuneResult": "train",
    "finetune_ranker": "train",
}


def __getattr__(name: str) -> Any:
    """The public names, each imported from its module on first use."""
    if name in LAZY:
        from importlib import import_module

        return getattr(import_module(f"rar_tools.finetune.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "RankingDataConfig",
    "RankingDataSummary",
    "export_ranking_data",
    "finetune_ranker",
]
