"""What the server may read: image files inside the allowed folders, and http(s) image URLs only
when allowed, with a byte cap and a time limit.

Nothing else leaves the machine at run time: models load through the normal open_clip /
Hugging Face caches (which honour `HF_HUB_OFFLINE=1`), Chroma runs embedded with telemetry off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import httpx

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


def fetch_image_url(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """GET an http(s) image URL: at most `max_bytes` (streamed, so a lying or missing length cannot
    exceed it), within `timeout_s` seconds in all, following at most 3 redirects to http(s) only."""
    deadline = time.monotonic() + timeout_s
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                check_url_scheme(url)
                with client.stream("GET", url, headers={"Accept": "image/*"}) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    if response.status_code >= 400:
                        raise ImageInputError(f"image URL {describe(url)} answered HTTP {response.status_code}")
                    return read_capped(response, url, max_bytes, deadline, timeout_s)
    except httpx.TimeoutException as exc:
        raise ImageInputError(f"image URL {describe(url)} did not answer within {timeout_s:g} s") from exc
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


def read_capped(response: httpx.Response, url: str, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    """The (decoded) body, refused as soon as it passes `max_bytes` or the deadline."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageInputError(f"image URL {describe(url)} has {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ImageInputError(f"image URL {describe(url)} sent more than the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise ImageInputError(f"image URL {describe(url)} did not finish within {timeout_s:g} s")
    return bytes(body)
