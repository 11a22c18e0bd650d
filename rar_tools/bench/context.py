"""What the sections of one run share: the resolved configuration, a work folder and one `RarTools`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from rar_tools.api import RarTools
from rar_tools.bench.config import RANDOM_QWEN25_VL_3B, TINY_RANKER, BenchConfig
from rar_tools.bench.data import write_photos
from rar_tools.errors import ModelLoadError
from rar_tools.settings import Settings

RANKER_SECTIONS = {"rank", "e2e", "describe"}


def ranker_folder(name: str, work_dir: Path, device: str) -> str:
    """The model for `--ranker-model`: the tiny random Qwen2-VL, a real-size Qwen2.5-VL-3B with random
    weights (bf16 on CUDA, written once under `work_dir`), or the given id / folder itself."""
    if name == TINY_RANKER:
        return str(checkpoint_writers(name).write_tiny_qwen2vl(work_dir / "tiny-qwen2-vl"))
    if name == RANDOM_QWEN25_VL_3B:
        folder = work_dir / "random-qwen2.5-vl-3b"
        if not (folder / "config.json").is_file():
            writers = checkpoint_writers(name)
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            writers.write_random_qwen25vl(folder, writers.QWEN25_VL_3B, device=device, dtype=dtype)
        return str(folder)
    return name


def checkpoint_writers(name: str) -> ModuleType:
    """The random-checkpoint writers (`rar_tools.testing.tiny_mllm`), imported only when a run asks for
    one; a clear `ModelLoadError` where that test code (or `tokenizers`) is not installed."""
    try:
        from rar_tools.testing import tiny_mllm
    except ImportError as exc:
        raise ModelLoadError(
            f"--ranker-model {name} writes a random test checkpoint with rar_tools.testing, which cannot be "
            f"imported here ({exc}): install rar-tools with its test helpers, or give a transformers model "
            "id or folder"
        ) from exc
    return tiny_mllm


@dataclass
class BenchContext:
    """The run's configuration (sizes resolved for its device), work folder and API object."""

    config: BenchConfig
    work_dir: Path
    tools: RarTools

    @classmethod
    def create(cls, config: BenchConfig, work_dir: Path) -> BenchContext:
        needs_ranker = bool(RANKER_SECTIONS & set(config.sections))
        settings = Settings(
            data_dir=work_dir / "memories",
            clip_model=config.clip_model,
            clip_pretrained=config.clip_pretrained,
            clip_precision=config.clip_precision,
            device=config.device,
            no_ranker=not needs_ranker,
            ranker_model=ranker_folder(config.ranker_model, work_dir, config.device) if needs_ranker else "none",
        )
        return cls(config=config, work_dir=work_dir, tools=RarTools(settings))

    @property
    def device(self) -> str:
        return self.config.device

    def photos(self, count: int, seed: int) -> list[str]:
        """`count` distinct photo-like JPEG files (written once per seed)."""
        return write_photos(self.work_dir / "photos", count, seed=self.config.seed * 1000 + seed)
