"""Checks that need CUDA: `pytest -m gpu`. Skipped where no CUDA device is present.

The first runs `rar-tools selfcheck --device cuda` itself (real-size models with random weights, written
once to the cache folder; several minutes on a first run). The others run the ranker's families and CLIP
in the precisions the server uses on a GPU (bf16 ranker, fp16 CLIP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rar_tools.bench.clip_checks import load_clip, precision_check
from rar_tools.bench.ranker_checks import score_agreement
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import TransformersRanker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run with pytest -m gpu on one)"),
]
ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "gemma3")
NAMES = ("house sparrow", "song sparrow", "barn swallow", "blue jay", "northern cardinal")


def noisy_image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(90, 150, 3), dtype=np.uint8))


def test_selfcheck_passes_on_cuda(tmp_path: Path) -> None:
    cache = Path(os.environ.get("RAR_SELFCHECK_CACHE", tmp_path / "cache"))
    out = tmp_path / "selfcheck.json"
    command = [sys.executable, "-m", "rar_tools", "selfcheck", "--device", "cuda", "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, env=env, timeout=3600)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [c for c in json.loads(out.read_text())["checks"] if c["status"] == "fail"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_families_keep_cached_scores_exact_in_bf16_on_cuda(tiny_ranker_dirs, family: str) -> None:
    ranker = TransformersRanker(RankerConfig(model=str(tiny_ranker_dirs[family]), device="cuda"))
    assert ranker.model.dtype == torch.bfloat16
    check = score_agreement(ranker, RankRequest(noisy_image(0), NAMES))
    assert check.status == "pass", check.detail


def test_tiny_ranker_runs_both_modes_on_cuda(tiny_ranker_dirs) -> None:
    ranker = TransformersRanker(RankerConfig(model=str(tiny_ranker_dirs["qwen2_5_vl"]), device="cuda", permutations=2))
    for mode in ("score", "generate"):
        result = ranker.rank(RankRequest(noisy_image(0), NAMES, mode=mode))
        assert sorted(r.label for r in result.ranked) == sorted(NAMES)


def test_clip_fp16_matches_fp32_on_cuda(clip_model: str) -> None:
    images = [noisy_image(i) for i in range(4)]
    reference = load_clip(clip_model, "cuda", "fp32").encode_images(images)
    check = precision_check("tiny", reference, load_clip(clip_model, "cuda", "fp16").encode_images(images))
    assert check.status == "pass", check.detail
