"""What the sections of one run share: the resolved configuration, a work folder and one `RarTools`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from rar_tools.api import RarTools
from rar_tools.bench.config import RANDOM_QWEN25_VL_3B, TINY_RANKER, BenchConfig
from rar_tools.bench.data import write_photos
from rar_tools.errors import ModelLoadError
from rar_tools.settings import Settings

RANKER_SECTIONS = {"rank", "e2e", "threads", "describe"}


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


def random_clip_folder(name: str, work_dir: Path) -> str:
    """A CLIP model: the tiny random one for `tiny`, the open_clip architecture `name` at real size with
    random weights (a `local-dir:` folder written once under `work_dir`), or a `local-dir:` / `hf-hub:`
    model as given."""
    if name.startswith(("local-dir:", "hf-hub:")):
        return name
    writers = testing_module(f"the random CLIP {name}", clip_writers)
    if name == TINY_RANKER:
        return f"local-dir:{writers.write_tiny_clip(work_dir / 'tiny-clip')}"
    folder = work_dir / f"random-{name}"
    if not (folder / "open_clip_config.json").is_file():
        try:
            writers.write_random_clip(folder, name)
        except ValueError as exc:
            raise ModelLoadError(
                f"{exc}: give an open_clip architecture such as ViT-B-16, or local-dir:/hf-hub:"
            ) from exc
    return f"local-dir:{folder}"


def checkpoint_writers(name: str) -> ModuleType:
    """The random-checkpoint writers of ranker models (`rar_tools.testing.tiny_mllm`)."""
    return testing_module(f"--ranker-model {name}", mllm_writers)


def mllm_writers() -> ModuleType:
    from rar_tools.testing import tiny_mllm

    return tiny_mllm


def clip_writers() -> ModuleType:
    from rar_tools.testing import tiny_models

    return tiny_models


def testing_module(what: str, load: Callable[[], ModuleType]) -> ModuleType:
    """A module of `rar_tools.testing`, imported only when a run asks for a random checkpoint; a clear
    `ModelLoadError` where that test code (or `tokenizers`) is not installed."""
    try:
        return load()
    except ImportError as exc:
        raise ModelLoadError(
            f"{what} is written as a random test checkpoint with rar_tools.testing, which cannot be "
            f"imported here ({exc}): install rar-tools with its test helpers, or give a model id or folder"
        ) from exc


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
