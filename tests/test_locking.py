"""One process per data folder: shared within a process, refused across processes, freed on exit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import locked_by_someone

from rar_tools import locking
from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.errors import MemoryStoreError
from rar_tools.locking import LOCK_FILE, lock_data_dir, unlock_data_dir
from rar_tools.memory import MemoryStore
from rar_tools.settings import Settings


def test_opening_a_store_locks_its_data_dir_with_our_pid(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    assert locked_by_someone(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    store.close()


def test_stores_in_one_process_share_the_lock(tmp_path: Path) -> None:
    first, second = MemoryStore(tmp_path), MemoryStore(tmp_path)
    first.close()
    assert locked_by_someone(tmp_path)  # the second store still holds it
    second.close()
    assert not locked_by_someone(tmp_path)


def test_close_is_idempotent(tmp_path: Path) -> None:
    store, other = MemoryStore(tmp_path), MemoryStore(tmp_path)
    store.close()
    store.close()  # must not give back the other store's use
    assert locked_by_someone(tmp_path)
    other.close()


def test_the_api_used_as_a_context_manager_frees_the_data_folder_at_the_end(tmp_path: Path) -> None:
    with RarTools(Settings(data_dir=tmp_path, no_ranker=True)) as tools:
        tools.list_memories()  # opens the store
        assert locked_by_someone(tmp_path)
    assert not locked_by_someone(tmp_path)


def test_an_in_process_command_frees_the_data_folder_when_it_returns(tmp_path: Path) -> None:
    assert main(["memories", "--data-dir", str(tmp_path), "--no-ranker"]) == 0
    assert not locked_by_someone(tmp_path)


def leave_partial_file(data_dir: Path) -> Path:
    """A temporary exemplar file as a process killed mid-write leaves it."""
    partial = data_dir / "images" / "ab" / ".tmp-killed-mid-write.jpg"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\xff\xd8 half a jpeg")
    return partial


def test_leftover_partial_exemplar_files_are_removed_on_open(tmp_path: Path) -> None:
    partial = leave_partial_file(tmp_path)
    MemoryStore(tmp_path).close()
    assert not partial.exists()


def test_partial_files_are_removed_when_the_server_claimed_the_folder_first(tmp_path: Path) -> None:
    partial = leave_partial_file(tmp_path)
    claim = lock_data_dir(tmp_path)  # what `serve` does at start, before any store opens
    MemoryStore(tmp_path).close()
    unlock_data_dir(claim)
    assert not partial.exists()


def test_an_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(MemoryStoreError, match="cannot use the data folder .*file/data"):
        MemoryStore(tmp_path / "file" / "data")


def test_without_fcntl_the_folder_is_used_with_a_clear_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(locking, "fcntl", None)
    with caplog.at_level(logging.WARNING, logger="rar_tools.locking"):
        lock = lock_data_dir(tmp_path)
    unlock_data_dir(lock)
    assert "no fcntl file locks" in caplog.text and "only one rar-tools process" in caplog.text


@contextmanager
def serving(data_dir: Path, clip_model: str) -> Iterator[subprocess.Popen]:
    """A real `rar-tools serve` (stdio) on `data_dir`, once it holds the folder; killed afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(data_dir), "--clip-model", clip_model]
        + ["--no-ranker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ((data_dir / LOCK_FILE).is_file() and (data_dir / LOCK_FILE).read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory, clip_model: str):
    """(data folder, server process) shared by the refusal tests."""
    data_dir = tmp_path_factory.mktemp("held") / "data"
    with serving(data_dir, clip_model) as process:
        yield data_dir, process


def test_a_second_server_on_the_same_data_dir_is_refused(
    running_server, clip_model: str, capsys: pytest.CaptureFixture
) -> None:
    data_dir, server = running_server
    code = main(["serve", "--data-dir", str(data_dir), "--clip-model", clip_model, "--no-ranker"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"the data folder {str(data_dir)!r} is in use by another rar-tools process (pid {server.pid})" in err


def test_a_store_is_refused_while_another_process_holds_the_folder(running_server) -> None:
    data_dir, server = running_server
    started = time.monotonic()
    with pytest.raises(MemoryStoreError, match=f"pid {server.pid}"):
        MemoryStore(data_dir, lock_wait_s=0.5)
    assert time.monotonic() - started < 5


def test_the_lock_dies_with_its_process(tmp_path: Path, clip_model: str) -> None:
    with serving(tmp_path / "data", clip_model) as server:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        store = MemoryStore(tmp_path / "data", lock_wait_s=0)  # the stale lock file is harmless
    assert store.names() == []
    store.close()
