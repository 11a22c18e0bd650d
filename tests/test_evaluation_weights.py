"""Test weights are recognised from evidence (marker file, random-init identity), never from names."""

from __future__ import annotations

from pathlib import Path

from rar_tools.encoder import EncoderIdentity
from rar_tools.evaluation.weights import describe_weights
from rar_tools.settings import Settings
from rar_tools.testing.marker import is_tiny_checkpoint

REAL_CLIP = EncoderIdentity("ViT-B-16", "openai", 512)


def test_tiny_checkpoints_carry_the_marker(tiny_models_dir: Path) -> None:
    assert all(is_tiny_checkpoint(tiny_models_dir / role) for role in ("clip", "mllm", "llava"))


def test_tiny_clip_and_ranker_are_flagged(tiny_models_dir: Path) -> None:
    settings = Settings(clip_model=f"local-dir:{tiny_models_dir / 'clip'}", ranker_model=str(tiny_models_dir / "mllm"))
    info = describe_weights(settings, EncoderIdentity(settings.clip_model, "model-folder", 32), "transformers:x")
    assert info.test_weights and len(info.warnings) == 2


def test_random_init_clip_is_flagged() -> None:
    info = describe_weights(Settings(clip_pretrained="none"), EncoderIdentity("ViT-B-16", "random-init", 512), None)
    assert info.test_weights and "random weights" in info.warnings[0]


def test_real_weights_are_not_flagged() -> None:
    info = describe_weights(Settings(), REAL_CLIP, "transformers:Qwen/Qwen2.5-VL-3B-Instruct")
    assert not info.test_weights and info.clip == "ViT-B-16 (openai, 512-d)"


def test_a_local_folder_without_the_marker_is_not_flagged(tmp_path: Path) -> None:
    (tmp_path / "tiny-looking-name").mkdir()
    settings = Settings(clip_model=f"local-dir:{tmp_path / 'tiny-looking-name'}")
    assert not describe_weights(settings, EncoderIdentity(settings.clip_model, "model-folder", 512), None).test_weights


def test_the_ranker_is_only_checked_when_rar_ran(tiny_models_dir: Path) -> None:
    settings = Settings(ranker_model=str(tiny_models_dir / "mllm"))
    assert not describe_weights(settings, REAL_CLIP, None).test_weights
