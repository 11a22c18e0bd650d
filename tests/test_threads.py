"""CPU threads: a default per model from its size and the cores, `--threads` to override, applied in
the thread that calls the model (torch keeps the count per OS thread)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from conftest import make_image
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.settings import Settings
from rar_tools.threads import (
    MAX_DEFAULT_THREADS,
    SMALL_MODEL_PARAMETERS,
    default_threads,
    parameter_count,
    preprocess_workers,
)


def test_small_models_get_one_thread_and_large_ones_a_thread_per_core() -> None:
    assert default_threads(SMALL_MODEL_PARAMETERS - 1, cores=16) == 1
    assert default_threads(SMALL_MODEL_PARAMETERS, cores=2) == 2
    assert default_threads(10**9, cores=64) == MAX_DEFAULT_THREADS


def test_the_preprocessing_pool_takes_half_the_threads() -> None:
    assert [preprocess_workers(n) for n in (1, 2, 3, 4, 16, 64)] == [1, 1, 1, 2, 8, 8]


def test_parameters_are_counted_for_torch_modules_only() -> None:
    assert parameter_count(torch.nn.Linear(3, 2)) == 8 and parameter_count(object()) == 0


def test_the_tiny_models_run_on_one_thread_by_default(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> None:
    tools = RarTools(
        Settings(data_dir=tmp_path / "data", clip_model=clip_model, ranker_model=str(tiny_models_dir / "mllm"))
    )
    assert tools.encoder.threads == 1 and tools.ranker.threads == 1


def test_threads_setting_applies_to_every_model(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> None:
    ranker = str(tiny_models_dir / "mllm")
    tools = RarTools(Settings(data_dir=tmp_path / "data", clip_model=clip_model, ranker_model=ranker, threads=3))
    assert tools.encoder.threads == 3 and tools.ranker.threads == 3


def test_a_model_call_sets_the_calling_threads_torch_threads(tmp_path: Path, clip_model: str) -> None:
    """A worker thread that ran torch on 2 threads runs the encoder on its own count (1)."""
    encoder = RarTools(Settings(data_dir=tmp_path / "data", clip_model=clip_model, no_ranker=True)).encoder
    image = Image.open(make_image(tmp_path / "red.png", "red", seed=1))
    seen: list[int] = []

    def worker() -> None:
        torch.set_num_threads(2)
        encoder.encode_images([image])
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [encoder.threads] == [1]
