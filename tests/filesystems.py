"""Small file systems made by a test: a size-limited tmpfs (a disk that fills up) and a read-only
bind mount (a folder nobody may write, root included). Each skips the test, saying why, where the
test may not mount (not root, no mount command, a container without the capability)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(*arguments: str) -> None:
    """Run `mount ARGUMENTS`, skipping the test when mounting is not permitted here."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a test file system needs root and the mount command")
    done = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a test file system here: {done.stderr.strip()}")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=True, capture_output=True)


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """`folder` (created empty) on a tmpfs of `size` (e.g. '5m'): writes past it fail with ENOSPC."""
    folder.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        unmount(folder)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder`, as it is, made read-only for everyone (a read-only bind mount over itself)."""
    mount("--bind", str(folder), str(folder))
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount here: {remount.stderr.strip()}")
        yield folder
    finally:
        unmount(folder)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the file system of `folder` until about `leave_bytes` are free; returns the filler file."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler
