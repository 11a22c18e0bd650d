"""The tiny-checkpoint writer produces real on-disk formats that load through the normal paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.encoder import create_encoder
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import TransformersRanker
from rar_tools.testing.tiny_detector import write_tiny_owlv2
from rar_tools.testing.tiny_mllm import TINY_QWEN25_VL, write_random_qwen25vl
from rar_tools.testing.tiny_models import write_tiny_clip


def test_tiny_clip_is_an_open_clip_local_dir(tmp_path: Path) -> None:
    folder = write_tiny_clip(tmp_path / "clip")
    assert (folder / "open_clip_config.json").is_file()
    assert (folder / "open_clip_model.safetensors").is_file()
    encoder = create_encoder(f"local-dir:{folder}")
    assert encoder.identity.dim == 32


def test_tiny_clip_weights_are_deterministic(tmp_path: Path) -> None:
    a = write_tiny_clip(tmp_path / "a") / "open_clip_model.safetensors"
    b = write_tiny_clip(tmp_path / "b") / "open_clip_model.safetensors"
    assert a.read_bytes() == b.read_bytes()


def test_command_writes_every_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "rar_tools.testing.tiny_models", str(out)], check=True, capture_output=True, timeout=300
    )
    assert (out / "clip" / "open_clip_config.json").is_file()
    assert (out / "mllm" / "config.json").is_file()
    assert (out / "llava" / "config.json").is_file()
    assert (out / "detector" / "config.json").is_file()
    assert (out / "sam" / "config.json").is_file() and (out / "sam" / "processor_config.json").is_file()


def test_tiny_detector_loads_through_the_auto_classes(tmp_path: Path) -> None:
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    folder = write_tiny_owlv2(tmp_path / "detector")
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder)
    queries = [["a bird", "a very long query that is cut to sixteen tokens"]]
    ids = processor(text=queries, return_tensors="pt", truncation=True).input_ids
    assert model.config.model_type == "owlv2" and ids.shape == (2, 16)
    # OWL pools at the highest id: end of text, after "a bird" as 5 byte tokens, and last in the cut query
    assert ids.argmax(-1).tolist() == [6, 15]


def test_tiny_detector_weights_are_deterministic(tmp_path: Path) -> None:
    a = write_tiny_owlv2(tmp_path / "a") / "model.safetensors"
    b = write_tiny_owlv2(tmp_path / "b") / "model.safetensors"
    assert a.read_bytes() == b.read_bytes()


def test_random_qwen25vl_ranks_with_cached_scores_equal_to_uncached(tmp_path: Path) -> None:
    folder = write_random_qwen25vl(tmp_path / "qwen25", TINY_QWEN25_VL)
    ranker = TransformersRanker(RankerConfig(model=str(folder), device="cpu"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8))
    request = RankRequest(image=image, candidates=("blue jay", "house sparrow", "barn owl"))
    assert ranker.family == "qwen2_5_vl"
    assert ranker.candidate_scores(request) == pytest.approx(ranker.score_without_cache(request), abs=1e-4)
