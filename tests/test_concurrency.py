"""Concurrent calls from many threads (as the MCP server makes them): each model runs one call at a
time, results match the sequential ones, and the store stays consistent."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.encoder import EncoderIdentity, create_encoder
from rar_tools.memory import ExemplarImage, MemoryStore
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import TransformersRanker
from rar_tools.settings import Settings

THREADS = 8


class ActivityMeter:
    """Counts how many threads are inside a module's forward at once, via forward hooks."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.active = self.most = 0
        self._lock = threading.Lock()
        self._handles = []
        for module in modules:
            self._handles.append(module.register_forward_pre_hook(self.enter))
            self._handles.append(module.register_forward_hook(self.leave))

    def enter(self, *_: object) -> None:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)

    def leave(self, *_: object) -> None:
        with self._lock:
            self.active -= 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def run_together(jobs: list[Callable[[], object]]) -> list[object]:
    """Run the jobs on `THREADS` threads, the first wave released at once; results in job order."""
    first_wave = min(THREADS, len(jobs))
    start = threading.Barrier(first_wave)

    def run(index: int) -> object:
        if index < first_wave:
            start.wait(timeout=30)
        return jobs[index]()

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(len(jobs))))


def pictures(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(count)]


def test_the_clip_model_runs_one_call_at_a_time_with_unchanged_results(clip_model: str) -> None:
    encoder = create_encoder(clip_model, None, "cpu", batch_size=2)
    images, texts = pictures(6), [f"label {i}" for i in range(6)]
    expected_images, expected_texts = encoder.encode_images(images), encoder.encode_texts(texts)
    meter = ActivityMeter(encoder.model.visual, encoder.model.transformer)
    try:
        jobs = [lambda: encoder.encode_images(images), lambda: encoder.encode_texts(texts)] * (THREADS * 2)
        results = run_together(jobs)
    finally:
        meter.remove()
    assert meter.most == 1
    for result, expected in zip(results, [expected_images, expected_texts] * THREADS * 2):
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_the_ranker_model_runs_one_call_at_a_time_with_unchanged_results(tiny_models_dir: Path) -> None:
    ranker = TransformersRanker(RankerConfig(model=str(tiny_models_dir / "mllm"), device="cpu", max_new_tokens=8))
    requests = [
        RankRequest(image=image, candidates=("Blue Jay", "Cardinal", "Robin"), mode=mode)
        for image, mode in zip(pictures(4, seed=1), ["score", "generate", "score", "generate"])
    ]
    expected = [ranker.rank(request).ranked for request in requests]
    meter = ActivityMeter(ranker.model)
    try:
        results = run_together([lambda r=r: ranker.rank(r).ranked for r in requests * 3])
    finally:
        meter.remove()
    assert meter.most == 1
    for got, want in zip(results, expected * 3):
        assert [c.label for c in got] == [c.label for c in want]
        assert [c.score for c in got] == pytest.approx([c.score for c in want], abs=1e-5)


def test_first_use_from_many_threads_opens_one_store(settings: Settings) -> None:
    tools = RarTools(settings)
    stores = run_together([lambda: tools.store] * THREADS)
    assert all(store is stores[0] for store in stores)
    tools.close()


def test_the_same_image_added_by_many_threads_is_stored_once(tools: RarTools, image_folder: Path) -> None:
    image = str(image_folder / "red" / "0.png")
    results = run_together([lambda: tools.add_images("fresh", [image], "red")] * THREADS)
    assert sum(r.added for r in results) == 1 and sum(r.already_present for r in results) == THREADS - 1
    assert tools.store.count("fresh") == 1


def test_adds_and_removals_at_once_leave_no_entry_without_its_file(tools: RarTools, tmp_path: Path) -> None:
    """Pairs of calls share one image: one keeps it under a label, the other adds it under another
    label and removes that again, which deletes the file unless an entry still uses it."""
    images = []
    for n, picture in enumerate(pictures(THREADS * 2, seed=2)):
        picture.save(tmp_path / f"{n}.png")
        images.append(str(tmp_path / f"{n}.png"))

    def keep(image: str) -> None:
        tools.add_images("m", [image], "kept")
        tools.retrieve("m", image, k=2)

    def add_then_remove(image: str) -> None:
        added = tools.add_images("m", [image], "passing")
        tools.remove("m", entry_ids=added.entry_ids)

    run_together([lambda i=i, t=turn: (keep, add_then_remove)[t](i) for i in images for turn in (0, 1)])
    stored = tools.store.index.get("m").get(include=["metadatas"])["metadatas"]
    assert len(stored) == len(images) and {m["label"] for m in stored} == {"kept"}
    for metadata in stored:
        assert (tools.store.data_dir / metadata["image_file"]).is_file(), metadata


def test_store_adds_and_removals_at_once_leave_no_entry_without_its_file(tmp_path: Path) -> None:
    """The same race on the store alone, many more times: `add_images` writes a file and its entry
    under the write lock, so a removal's deletion of unused files never falls between the two."""
    store = MemoryStore(tmp_path / "data")
    identity = EncoderIdentity("test", "none", 4)
    rng = np.random.default_rng(3)
    images = [
        ExemplarImage(picture, f"{n:064x}", None, (v / np.linalg.norm(v)).astype(np.float32))
        for n, (picture, v) in enumerate(zip(pictures(THREADS * 8, seed=3), rng.normal(size=(THREADS * 8, 4))))
    ]

    def keep(image: ExemplarImage) -> None:
        store.add_images("m", identity, [image], "kept", max_side=32)

    def add_then_remove(image: ExemplarImage) -> None:
        for _ in range(3):
            added = store.add_images("m", identity, [image], "passing", max_side=32)
            store.remove("m", ids=added.added + added.already_present)

    try:
        run_together([lambda i=i, t=turn: (keep, add_then_remove)[t](i) for i in images for turn in (1, 0)])
        entries = store.entries("m", store.index.get("m").get(include=[])["ids"])
        assert len(entries) == len(images) and {e.label for e in entries.values()} == {"kept"}
        assert all(e.image_path is not None and e.image_path.is_file() for e in entries.values())
    finally:
        store.close()
