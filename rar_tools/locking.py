"""One process per data folder: an OS file lock, held by the process for as long as it uses the folder.

Chroma's embedded store must not be opened by two processes at once, so the first process to open
a data folder takes an exclusive `fcntl.flock` on `DATA_DIR/.rar-tools.lock` and writes its pid
there; another process is refused with a message naming the folder and that pid. The OS drops the
lock when the holder exits, however it exits (SIGKILL included), so a stale lock file is harmless.

Within one process the lock is re-entrant: every `MemoryStore` on the folder shares one
`DataDirLock`, counted, whose `writes` lock also serialises the process's own writes. This
registry is the one piece of process-wide state in the package, because `flock` itself is per
process: a second `flock` on the same file from the same process would conflict with the first.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rar_tools.errors import MemoryStoreError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_FILE = ".rar-tools.lock"
POLL_S = 0.1


@dataclass
class DataDirLock:
    """This process's hold on one data folder: the locked file, its users, the write lock, and
    whether a store has tidied the folder since the lock was taken."""

    data_dir: Path
    handle: IO[str] | None
    users: int = 1
    writes: threading.RLock = field(default_factory=threading.RLock)
    tidied: bool = False
    marks: dict[str, dict[str, int]] = field(default_factory=dict)  # memory -> writer -> last write (mirror.py)


_held: dict[Path, DataDirLock] = {}
_registry = threading.Lock()


def lock_data_dir(data_dir: Path, wait_s: float = 3.0) -> DataDirLock:
    """Take (or share, within this process) the lock on `data_dir`, waiting up to `wait_s` seconds
    for another process to let go; refuses with `MemoryStoreError` naming that process."""
    data_dir = Path(data_dir).expanduser().resolve()
    with _registry:
        held = _held.get(data_dir)
        if held is not None:
            held.users += 1
            return held
        try:
            if not data_dir.is_dir():
                data_dir.mkdir(parents=True)
            handle = acquire_file_lock(data_dir / LOCK_FILE, wait_s)
        except OSError as exc:
            raise MemoryStoreError(f"cannot use the data folder {str(data_dir)!r}: {exc.strerror or exc}") from exc
        held = DataDirLock(data_dir, handle)
        _held[data_dir] = held
        return held


def unlock_data_dir(lock: DataDirLock) -> None:
    """Give back one use of the lock; the last use releases the file lock."""
    with _registry:
        lock.users -= 1
        if lock.users > 0:
            return
        _held.pop(lock.data_dir, None)
        if lock.handle is not None:
            lock.handle.close()  # closing the file releases the flock


def acquire_file_lock(path: Path, wait_s: float) -> IO[str] | None:
    """An open handle on `path` holding an exclusive flock, with this pid written in it."""
    if fcntl is None:
        log.warning(
            "this platform has no fcntl file locks, so the data folder %s is not locked: "
            "make sure only one rar-tools process uses it at a time",
            path.parent,
        )
        return None
    handle = open_lock_file(path)
    if handle is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise MemoryStoreError(
                    f"the data folder {str(path.parent)!r} is in use by another rar-tools process "
                    f"({holder(path)}); only one process may use a data folder at a time. Stop that "
                    "process, or give this one another --data-dir"
                ) from None
            time.sleep(POLL_S)
    if handle.writable():
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle


def open_lock_file(path: Path) -> IO[str] | None:
    """The lock file, open for as long as the lock is held. In a read-only data folder (which no
    process can write, so two readers are safe) it is opened read-only, or, if it does not exist,
    not at all (the folder is then used unlocked, with a warning)."""
    try:
        return open(path, "a+", encoding="utf-8")
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        log.warning("the data folder %s is read-only and has no lock file: it is used without a lock", path.parent)
        return None


def holder(path: Path) -> str:
    """'pid N' of the process that wrote the lock file, as far as the file says."""
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"
