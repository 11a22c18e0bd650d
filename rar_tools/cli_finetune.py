"""The `ranking-data` and `finetune` commands (docs/finetune.md): administrative, long-running jobs
for the command line and the Python API (`rar_tools.finetune`), not MCP tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rar_tools.errors import RarToolsError

DATASET_FORMATS = ("auto", "folder", "cub", "csv")


def cmd_ranking_data(tools, args) -> None:
    """Write ranking-format samples from a memory, or from a labelled data set's train split."""
    from rar_tools.finetune.data import RankingDataConfig, export_dataset_ranking_data, export_ranking_data

    config = RankingDataConfig(
        Path(args.out), args.k, args.per_label, args.seed, args.format, args.images, args.overwrite
    )
    if args.dataset:
        from rar_tools.evaluation import load_dataset

        dataset = load_dataset(args.source, args.dataset_format, args.split_ratio, args.seed)
        summary = export_dataset_ranking_data(tools.settings, dataset, config)
    else:
        summary = export_ranking_data(tools, args.source, config)
    if args.json:
        print(summary.model_dump_json(indent=2))
        return
    images = {"copy": "copied", "reference": "referenced", "inline": "inline"}[summary.images]
    print(
        f"wrote {summary.samples} samples covering {summary.labels_covered} of {summary.labels} labels to "
        f"{Path(summary.out) / 'train.jsonl'} ({summary.format} layout, images {images}); leave-one-out retrieval "
        f"had the true label first in {100 * summary.true_first:.1f}% of samples and among the {summary.k} "
        f"candidates in {100 * summary.true_retrieved:.1f}% (it was put in for the other {summary.inserted})"
    )
    if summary.random_clip:
        print(
            "rar-tools: the CLIP has random test weights: these shares say nothing about real retrieval",
            file=sys.stderr,
        )


def cmd_finetune(tools, args) -> None:
    """Train a LoRA adapter for --ranker-model on ranking data."""
    from rar_tools.finetune.train import FinetuneConfig, finetune_ranker

    s = tools.settings
    if s.ranker_url:
        raise RarToolsError("finetune trains a local model (--ranker-model), not an endpoint: drop --ranker-url")
    if s.ranker_adapter:
        raise RarToolsError("finetune trains a new adapter for --ranker-model: drop --ranker-adapter")
    config = FinetuneConfig(
        data=Path(args.data),
        out=Path(args.out),
        base_model=s.ranker_model,
        device=s.device,
        image_side=s.ranker_image_side,
        max_steps=args.max_steps,
        lr=args.lr,
        rank=args.rank,
        save_every=args.save_every,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=False if args.json else None,
    )
    result = finetune_ranker(config)
    if args.json:
        print(result.model_dump_json(indent=2))
        return
    first, last = result.losses[:1] or [float("nan")], result.losses[-1:] or [float("nan")]
    print(
        f"trained steps {result.resumed_from + 1}-{result.steps} on {result.samples} samples in {result.seconds:.0f} s "
        f"(loss {first[0]:.3f} at step 1, {last[0]:.3f} at step {result.steps}); the adapter is in {result.adapter}: "
        f"rank with --ranker-adapter {result.adapter}"
    )


def add_finetune_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `ranking-data` and `finetune` through the parser's `command(name, fn, help)` helper."""
    data = command(
        "ranking-data",
        cmd_ranking_data,
        "write RAR ranking-format fine-tuning data from a memory (leave-one-out retrieval, the ranker's prompt)",
    )
    data.add_argument(
        "source", metavar="MEMORY", help="the memory; with --dataset, a labelled data set (as eval reads)"
    )
    data.add_argument("--out", required=True, help="folder for train.jsonl, images/ and summary.json")
    data.add_argument("--k", type=int, default=5, help="candidates per sample (as the ranker is given)")
    data.add_argument("--per-label", type=int, help="at most this many samples per label (seeded choice)")
    data.add_argument("--seed", type=int, default=0, help="seeds the per-label choice and the candidate shuffles")
    data.add_argument("--format", choices=["qwen", "llava", "openai"], default="qwen", help="chat layout of a line")
    data.add_argument(
        "--images",
        choices=["copy", "reference"],
        default="copy",
        help="copy the images to OUT/images/, or name them where they lie",
    )
    data.add_argument("--overwrite", action="store_true", help="replace earlier data in --out")
    data.add_argument("--dataset", action="store_true", help="MEMORY is a data set: its train split is used")
    data.add_argument("--dataset-format", choices=DATASET_FORMATS, default="auto", help="with --dataset")
    data.add_argument("--split-ratio", type=float, help="with --dataset: train fraction for data without a split")

    tune = command(
        "finetune",
        cmd_finetune,
        "train a LoRA adapter for --ranker-model on ranking data (needs peft: pip install 'rar-tools[finetune]')",
    )
    tune.add_argument("data", metavar="DATA_DIR", help="the --out folder of ranking-data (or its train.jsonl)")
    tune.add_argument("--out", required=True, metavar="ADAPTER_DIR", help="folder for the adapter and checkpoints")
    tune.add_argument("--max-steps", type=int, default=1000, help="optimizer steps, one sample each")
    tune.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (constant)")
    tune.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    tune.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    tune.add_argument("--seed", type=int, default=0, help="seeds the sample order and the LoRA initialisation")
    tune.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    tune.add_argument("--overwrite", action="store_true", help="discard an adapter or checkpoints in --out")
