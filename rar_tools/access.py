"""What the server may read: image files inside the allowed folders, and http(s) image URLs only
when allowed, with a byte cap and a time limit.

Nothing else leaves the machine at run time: models load through the normal open_clip /
Hugging Face caches (which honour `HF_HUB_OFFLINE=1`), Chroma runs embedded with telemetry off.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx

from rar_tools.deadline import BodyTooLarge, read_at_most, run_async
from rar_tools.errors import ImageInputError, describe

URL_SCHEMES = ("http", "https")
MAX_REDIRECTS = 3


def resolve_allowed(path: Path, allowed_dirs: Sequence[Path]) -> Path:
    """`path` with symlinks resolved; refused unless it lies in one of `allowed_dirs` (if any are
    given). The check comes before any existence test, so refused paths reveal nothing."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL characters
        raise ImageInputError(f"image path {describe(str(path))} cannot be resolved ({exc})") from exc
    if allowed_dirs and not any(resolved.is_relative_to(Path(folder).resolve()) for folder in allowed_dirs):
        folders = ", ".join(repr(str(folder)) for folder in allowed_dirs)
        raise ImageInputError(
            f"image path {describe(str(path))} is outside the folders this server may read "
            f"(symlinks followed): {folders}. Move or copy the image there, or send it as base64"
        )
    return resolved


# Opening without following symlinks at any level: O_PATH walks folders that may be searched but not
# listed (Linux); elsewhere folders are opened read-only.
WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | os.O_CLOEXEC
CAN_WALK = hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd


def open_regular_file(resolved: Path, shown: str) -> int:
    """A read-only descriptor of the regular file at `resolved` (a path without symlinks, as
    `resolve_allowed` returns), opened from `/` one component at a time without following a symlink
    at any level, so that what is read is what was checked even if the path changes meanwhile.

    Raises `OSError`: ELOOP when a component was swapped for a symlink since it was resolved, ESTALE
    when the file was replaced between its check and its opening; `ImageInputError` for something
    other than a regular file (`shown` names it)."""
    if not CAN_WALK:  # no O_NOFOLLOW / dir_fd (Windows): open by name
        return checked_regular(os.open(resolved, os.O_RDONLY | getattr(os, "O_BINARY", 0)), shown)
    if len(resolved.parts) < 2:  # the root folder itself
        raise ImageInputError(f"image path {shown} is not a file: it is a folder")
    *folders, name = resolved.parts[1:]
    parent = os.open(resolved.anchor, WALK_FLAGS)
    try:
        for folder in folders:
            child = os.open(folder, WALK_FLAGS, dir_fd=parent)
            os.close(parent)
            parent = child
        before = os.stat(name, dir_fd=parent, follow_symlinks=False)  # no open of a device or FIFO
        refuse_irregular(before.st_mode, shown)
        fd = os.open(name, READ_FLAGS, dir_fd=parent)
    finally:
        os.close(parent)
    opened = checked_regular(fd, shown)
    after = os.fstat(opened)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(opened)
        raise OSError(errno.ESTALE, "the file was replaced while it was being opened")
    return opened


def checked_regular(fd: int, shown: str) -> int:
    """`fd`, if it is a regular file (else closed and refused)."""
    try:
        refuse_irregular(os.fstat(fd).st_mode, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def refuse_irregular(mode: int, shown: str) -> None:
    """Refuse anything but a regular file; a symlink here appeared after the path was resolved."""
    if stat.S_ISLNK(mode):
        raise OSError(errno.ELOOP, "a symlink replaced the file while it was being opened")
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ImageInputError(f"image path {shown} is not a file: it is {kind}")


def fetch_image_url(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """GET an http(s) image URL: at most `max_bytes` (streamed, so a lying or missing length cannot
    exceed it), within `timeout_s` seconds of wall time in all, whatever the peer does (a status line
    or headers dripped a byte at a time included), following at most 3 redirects to http(s) only.

    Runs its own event loop (in a helper thread when the calling thread runs one)."""
    return run_async(fetch_within, url, max_bytes, timeout_s)


async def fetch_within(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """`fetch` cancelled at the deadline (the cancellation closes the connection)."""
    try:
        with anyio.fail_after(timeout_s):
            return await fetch(url, max_bytes)
    except TimeoutError as exc:
        raise ImageInputError(f"image URL {describe(url)} did not finish within {timeout_s:g} s") from exc


async def fetch(url: str, max_bytes: int) -> bytes:
    """The body of `url` after at most `MAX_REDIRECTS` redirects, capped at `max_bytes`."""
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=None) as client:
            for _ in range(MAX_REDIRECTS + 1):
                check_url_scheme(url)
                async with client.stream("GET", url, headers={"Accept": "image/*"}) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    if response.status_code >= 400:
                        raise ImageInputError(f"image URL {describe(url)} answered HTTP {response.status_code}")
                    return await read_capped(response, url, max_bytes)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        raise ImageInputError(f"image URL {describe(url)} could not be fetched ({type(exc).__name__}: {exc})") from exc
    raise ImageInputError(f"image URL {describe(url)} redirected more than {MAX_REDIRECTS} times")


def url_scheme(url: str) -> str:
    """The scheme of `url` in lower case (`http`, `file`, ...), or "" when it names none."""
    return url.split(":", 1)[0].lower() if ":" in url else ""


def is_web_url(source: str) -> bool:
    """Whether `source` is an http(s) URL (in any letter case)."""
    return url_scheme(source) in URL_SCHEMES


def check_url_scheme(url: str) -> None:
    if not is_web_url(url):
        raise ImageInputError(f"image URL {describe(url)} is not http(s); only http and https URLs are fetched")


async def read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    """The (decoded) body, refused as soon as it passes `max_bytes`."""
    try:
        return await read_at_most(response, max_bytes)
    except BodyTooLarge as exc:
        if exc.declared is not None:
            message = f"image URL {describe(url)} has {exc.declared} bytes; the limit is {max_bytes}"
            raise ImageInputError(message) from None
        raise ImageInputError(f"image URL {describe(url)} sent more than the limit of {max_bytes} bytes") from None
