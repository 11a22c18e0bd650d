"""Shared fixtures: tiny random checkpoints written once per test session, real files in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.settings import Settings
from rar_tools.testing.tiny_models import write_tiny_clip, write_tiny_models

# Tests never reach a model hub: everything they load is written to disk by the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT_DIR with clip/, mllm/ (tiny Qwen2-VL) and llava/ (tiny LLaVA), as the CLI writes it."""
    out = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(out)
    return out


@pytest.fixture(scope="session")
def clip_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny CLIP as an open_clip model name, exactly as a user would pass a local folder."""
    return f"local-dir:{write_tiny_clip(tmp_path_factory.mktemp('tiny-clip'))}"


def make_image(path: Path, colour: str, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A noisy image dominated by one colour, different for every seed."""
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[colour], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """`images/<colour>/<n>.png`: three images of each of four colours."""
    root = tmp_path / "images"
    for c_index, colour in enumerate(COLOURS):
        for n in range(3):
            make_image(root / colour / f"{n}.png", colour, seed=10 * c_index + n)
    return root


@pytest.fixture
def settings(tmp_path: Path, clip_model: str) -> Settings:
    """Settings with a fresh data dir and the tiny CLIP; no ranker."""
    return Settings(data_dir=tmp_path / "data", clip_model=clip_model, no_ranker=True)


@pytest.fixture
def tools(settings: Settings) -> RarTools:
    return RarTools(settings)


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """An ImageFolder data set, `labelled/{train,test}/<colour>_thing/<n>.png`: three visually distinct
    classes, four train and three test images each. Labels carry underscores, as data sets do."""
    root = tmp_path / "labelled"
    for c_index, colour in enumerate(("red", "green", "blue")):
        for split, count in (("train", 4), ("test", 3)):
            for n in range(count):
                seed = 100 * c_index + (50 if split == "test" else 0) + n
                make_image(root / split / f"{colour}_thing" / f"{n}.png", colour, seed=seed)
    return root
