"""Two writers sharing one Chroma server (two processes with their own data folders, here two
stores with their own write locks, in threads started at one instant): the memory's records stay
true. Chroma replaces collection metadata whole and has no transactions, so a naive
read-modify-write of the kinds record, or of a count, loses one writer's update."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from test_catalogue import IDENTITY, entry

from rar_tools.memory import KINDS_KEY, MemoryStore

ROUNDS = 12
pytestmark = pytest.mark.parametrize("memory_backend", ["chroma-server"], indirect=True)


def run_together(*writers: Callable[[], None]) -> None:
    """Start the writers at the same instant (a barrier) and wait for all; re-raise a failure."""
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def run(write: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout=30)
            write()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def writers(tmp_path: Path, make_store: Callable[[Path], MemoryStore]) -> tuple[MemoryStore, MemoryStore]:
    """Two stores on the test's server database, each with its own data folder and write lock."""
    return make_store(tmp_path / "first"), make_store(tmp_path / "second")


def test_two_writers_adding_different_new_kinds_at_once_both_stay_recorded(tmp_path: Path, make_store) -> None:
    first, second = writers(tmp_path, make_store)
    for round_ in range(ROUNDS):
        name = f"race-{round_}"
        created = first.index.create(name, IDENTITY)  # an empty memory, its kinds recorded (none)
        created.modify(metadata={**created.metadata, KINDS_KEY: ""})
        run_together(
            lambda name=name, r=round_: first.add(name, IDENTITY, [entry("jay", "image", r)]),
            lambda name=name, r=round_: second.add(name, IDENTITY, [entry("wren", "text", r)]),
        )
        assert first.kinds(name) == {"image", "text"}, f"round {round_}: a kind was dropped from the record"


def test_two_writers_adding_to_one_label_at_once_leave_its_true_count(tmp_path: Path, make_store) -> None:
    first, second = writers(tmp_path, make_store)
    for round_ in range(ROUNDS):
        name = f"count-{round_}"
        first.add(name, IDENTITY, [entry("jay", "image", 1000 + round_)])
        run_together(
            lambda name=name, r=round_: first.add(
                name, IDENTITY, [entry("jay", "image", 10 * r + i) for i in range(3)]
            ),
            lambda name=name, r=round_: second.add(
                name, IDENTITY, [entry("jay", "image", 500 + 10 * r + i) for i in range(2)]
            ),
        )
        assert first.catalogue.counts(name) == {("jay", "image"): 6}, f"round {round_}"
