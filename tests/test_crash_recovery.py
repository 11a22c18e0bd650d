"""Crashes lose nothing: a bulk add (`rar-tools add --folder`) killed with SIGKILL at seeded random
points leaves a store that opens, whose every entry has its exemplar file and a full embedding,
and re-running the add completes it without duplicates."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.cli import main
from rar_tools.encoder import EncoderIdentity
from rar_tools.images import PARTIAL_PREFIX
from rar_tools.memory import COLLECTION_PREFIX, MemoryStore, entry_id

LABELS = ["red", "green", "blue", "yellow"]
PER_LABEL = 8
KILLS = 4
TINY_CLIP_DIM = 32


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """`photos/<label>/<n>.png`: 8 distinct noisy images per label."""
    rng = np.random.default_rng(7)
    for label in LABELS:
        (tmp_path / "photos" / label).mkdir(parents=True)
        for n in range(PER_LABEL):
            pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{n}.png")
    return tmp_path / "photos"


# The bulk add, as `rar-tools add --folder` runs it, reporting every stored batch of two on stdout.
BULK_ADD = """
import sys
from pathlib import Path
from rar_tools.api import RarTools
from rar_tools.settings import Settings

data_dir, clip_model, folder = sys.argv[1:]
tools = RarTools(Settings(data_dir=data_dir, clip_model=clip_model, no_ranker=True, batch_size=2))
for label_dir in sorted(Path(folder).iterdir()):
    files = sorted(str(p) for p in label_dir.iterdir())
    tools.add_images("bulk", files, label_dir.name, skip_unreadable=True, progress=lambda n, _: print(n, flush=True))
"""


def kill_mid_add(data_dir: Path, folder: Path, clip_model: str, batches: int, extra_sleep_s: float) -> bool:
    """Start the bulk add; once it reports `batches` stored batches, wait `extra_sleep_s` and
    SIGKILL it. True if it was still running when killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", BULK_ADD, str(data_dir), clip_model, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for _ in range(batches):
            assert process.stdout.readline().strip().isdigit(), "the bulk add stopped early"
        time.sleep(extra_sleep_s)
        running = process.poll() is None
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()
    return running


def check_store(data_dir: Path) -> int:
    """Open the store as a new process would and check every entry; returns the entry count."""
    store = MemoryStore(data_dir, lock_wait_s=5)
    try:
        assert not list(store.images_dir.glob(f"*/{PARTIAL_PREFIX}*")), "half-written files were left"
        if "bulk" not in store.names():
            return 0
        got = store.client.get_collection(COLLECTION_PREFIX + "bulk").get(include=["metadatas", "embeddings"])
        for id_, metadata, embedding in zip(got["ids"], got["metadatas"], got["embeddings"]):
            assert id_ == entry_id("bulk", "image", metadata["sha256"], metadata["label"])  # idempotent ids
            with Image.open(store.data_dir / metadata["image_file"]) as copy:
                copy.load()  # the whole exemplar file is there
            assert len(embedding) == TINY_CLIP_DIM and abs(np.linalg.norm(embedding) - 1) < 1e-3
        identity = EncoderIdentity(*(store.summary("bulk").encoder.__dict__.values()))
        if got["ids"]:  # the index finds every entry it holds metadata for
            query = np.asarray(got["embeddings"][0])
            hits = store.nearest_excluding("bulk", identity, query, "image", len(got["ids"]))
            assert {hit.id for hit in hits} == set(got["ids"])
        return len(got["ids"])
    finally:
        store.close()


def test_a_bulk_add_killed_at_random_points_loses_nothing_and_completes_on_rerun(
    tmp_path: Path, photo_folder: Path, clip_model: str, capsys: pytest.CaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(20240607)
    total_batches = len(LABELS) * PER_LABEL // 2
    kills, counts = 0, []
    for _ in range(KILLS):
        batches, sleep_s = rng.randint(1, total_batches - 2), rng.uniform(0.0, 0.05)
        kills += kill_mid_add(data_dir, photo_folder, clip_model, batches, sleep_s)
        counts.append(check_store(data_dir))
    assert kills >= KILLS - 1, "the add finished before most kills: kill earlier"

    command = ["add", "bulk", "--folder", str(photo_folder), "--data-dir", str(data_dir), "--clip-model", clip_model]
    assert main(command) == 0  # re-running the add (here through the CLI) completes what was left
    capsys.readouterr()
    assert check_store(data_dir) == len(LABELS) * PER_LABEL  # every image exactly once
    print(f"\nsurvived {kills} SIGKILLs mid-add; entries after each: {counts}")
