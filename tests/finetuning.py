"""Ranking data a tiny ranker can learn in a few dozen steps: three plain-colour images, each with a
fixed answer order, written in the real `ranking-data` layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from rar_tools.finetune.samples import Sample, sample_record
from rar_tools.finetune.train import FinetuneConfig
from rar_tools.ranking.prompts import request_prompt

PATTERN = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220)}


def write_learnable_data(folder: Path) -> Path:
    """`folder/train.jsonl` + `folder/images/`: for each colour, the answer lists it first."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    prompt = request_prompt(sorted(PATTERN), icl=False, context=False, exemplars=False)
    lines = []
    for name, rgb in PATTERN.items():
        Image.fromarray(np.full((32, 32, 3), rgb, np.uint8)).save(folder / "images" / f"{name}.png")
        answer = repr([name] + [other for other in PATTERN if other != name])
        lines.append(json.dumps(sample_record(Sample(f"images/{name}.png", prompt, answer), "qwen", name)))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def tiny_config(data: Path, out: Path, base: Path, **changes) -> FinetuneConfig:
    """A few dozen CPU steps on the tiny model, at a learning rate that tiny random weights need."""
    defaults = {"device": "cpu", "max_steps": 30, "lr": 1e-2, "rank": 8, "save_every": 10, "progress": False}
    return FinetuneConfig(data=data, out=out, base_model=str(base), **{**defaults, **changes})
