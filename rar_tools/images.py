"""Images in: decode a path, base64 string, data URL or (if allowed) http(s) URL into a safe RGB
image. (Exemplar copies are written by the memory: `rar_tools.memory.files`.)"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from rar_tools.access import fetch_image_url, is_web_url, open_regular_file, resolve_allowed
from rar_tools.errors import ImageInputError, describe
from rar_tools.memory.files import PARTIAL_PREFIX, store_image, stored_image_path  # noqa: F401 (moved; re-exported)

DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.I)
BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=_-]+$")
# The first bytes of each accepted format (WebP: RIFF, 4 bytes of size, WEBP); `SIGNATURE_CHARS` base64
# characters hold more than enough of them.
IMAGE_SIGNATURES = {
    "JPEG": re.compile(rb"\A\xff\xd8\xff"),
    "PNG": re.compile(rb"\A\x89PNG\r\n\x1a\n"),
    "GIF": re.compile(rb"\AGIF8[79]a"),
    "WebP": re.compile(rb"\ARIFF.{4}WEBP", re.S),
    "BMP": re.compile(rb"\ABM"),
    "TIFF": re.compile(rb"\A(II\*\x00|MM\x00\*)"),
}
SIGNATURE_CHARS = 24
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageLimits:
    """What an image input may read and cost: bytes, pixels, folders and URLs.

    `allowed_dirs`: when not empty, image paths must resolve (symlinks followed) inside one of them.
    `allow_urls`: fetch http(s) URLs, at most `max_bytes` within `url_timeout_s` seconds.
    """

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    allowed_dirs: tuple[Path, ...] = ()
    allow_urls: bool = False
    url_timeout_s: float = 10.0


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image, the sha256 of its encoded bytes, and its source path or URL if any."""

    image: Image.Image
    sha256: str
    source_path: str | None


def read_image_bytes(source: str, limits: ImageLimits) -> tuple[bytes, str | None]:
    """The encoded bytes of `source` (absolute path, base64, data: URL or http(s) URL) and the
    resolved path or URL if it was one."""
    if not isinstance(source, str) or not source.strip():
        raise ImageInputError("image is empty: give an absolute file path, base64 data or a data: URL")
    source = source.strip()
    match = DATA_URL.match(source)
    if match:
        mime = (match.group("mime") or "").lower()
        if not mime.startswith("image/"):
            raise ImageInputError(f"data URL has type {mime or 'none'!r}; only image/* data URLs are accepted")
        return decode_base64(source[match.end() :], limits), None
    if base64_image_format(source):  # before paths: every JPEG's base64 starts with '/9j/'
        return decode_base64(source, limits), None
    if source.startswith(("/", "~", "file://")) or re.match(r"^[A-Za-z]:[\\/]", source):
        return read_file(source, limits)
    if is_web_url(source):
        if not limits.allow_urls:
            raise ImageInputError(
                "image URLs are not fetched (the server was not started with --allow-urls): "
                "give an absolute file path, base64 or a data: URL"
            )
        return fetch_image_url(source, limits.max_bytes, limits.url_timeout_s), source
    if len(source) >= 16 and BASE64_CHARS.match("".join(source.split())):
        return decode_base64(source, limits), None
    raise ImageInputError(f"image {describe(source)} is neither an absolute file path nor base64 data nor a data: URL")


def read_file(source: str, limits: ImageLimits) -> tuple[bytes, str]:
    """Read an absolute image path inside the allowed folders: a regular file, never a folder or
    device, and at most `max_bytes` even if it grows while being read."""
    if "\x00" in source:
        raise ImageInputError(f"image path {describe(source)} contains a NUL character")
    try:
        path = Path(source.removeprefix("file://")).expanduser()
    except RuntimeError as exc:  # ~user of an unknown user
        raise ImageInputError(f"image path {describe(source)} cannot be expanded ({exc})") from exc
    if not path.is_absolute():
        raise ImageInputError(f"image path {describe(source)} is not absolute")
    resolved = resolve_allowed(path, limits.allowed_dirs)
    shown = describe(str(path))
    try:
        with os.fdopen(open_regular_file(resolved, shown), "rb") as handle:  # what is read is what was checked
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise ImageInputError(f"image file {shown} is empty (0 bytes)")
            if size > limits.max_bytes:
                raise ImageInputError(f"image file {shown} has {size} bytes; the limit is {limits.max_bytes}")
            data = handle.read(limits.max_bytes + 1)
    except FileNotFoundError as exc:
        raise ImageInputError(f"image file {shown} does not exist") from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ESTALE):
            raise ImageInputError(
                f"image path {shown} changed while it was being opened (a symlink or another file replaced "
                "part of it); refused"
            ) from exc
        raise ImageInputError(f"image file {shown} cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # NUL characters
        raise ImageInputError(f"image file {shown} cannot be read: {exc}") from exc
    if len(data) > limits.max_bytes:
        raise ImageInputError(f"image file {shown} grew past the limit of {limits.max_bytes} bytes while read")
    return data, str(resolved)


def base64_image_format(text: str) -> str | None:
    """The format whose signature `text` starts with once decoded as base64 (standard or URL-safe,
    whitespace ignored), or None: the rule that tells base64 image data from a file path."""
    head = "".join(text[: 4 * SIGNATURE_CHARS].split())[:SIGNATURE_CHARS]
    if len(head) < SIGNATURE_CHARS or not BASE64_CHARS.match(head):
        return None
    try:
        start = base64.b64decode(head, altchars=b"-_" if ("-" in head or "_" in head) else None, validate=True)
    except (binascii.Error, ValueError):
        return None
    return next((name for name, signature in IMAGE_SIGNATURES.items() if signature.match(start)), None)


def decode_base64(text: str, limits: ImageLimits) -> bytes:
    """Decode standard or URL-safe base64, bounded by the byte limit before decoding."""
    text = "".join(text.split())
    if len(text) * 3 // 4 > limits.max_bytes:
        raise ImageInputError(f"base64 image is over the limit of {limits.max_bytes} bytes")
    try:  # "-" and "_" read as "+" and "/": both alphabets (and a mixture) decode
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(f"image is not valid base64 ({exc})") from exc
    if not data:
        raise ImageInputError("base64 image decodes to zero bytes")
    return data


def pillow_warnings_filtered() -> None:
    """Pillow's UserWarnings on damaged files are not shown (each image is refused or tolerated here
    with a message of its own), and its decompression-bomb warning is an error.

    The filters are added only when missing (once per process, or again after a caller restored the
    filters, as `catch_warnings` does), never around each decode: every change of the warning filters
    resets Python's memory of the warnings already shown, so a library's deprecation warning came
    back after every image (300 times in one evaluation); and changing them per call is not
    thread-safe."""
    if not any(f[0] == "error" and f[2] is Image.DecompressionBombWarning for f in warnings.filters):
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.|rar_tools\.images")
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, limits: ImageLimits, name: str = "image") -> Image.Image:
    """Decode bytes into an RGB image: size-checked before decoding, EXIF-rotated, first frame."""
    pillow_warnings_filtered()
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ImageInputError(f"{name} is {width}x{height} pixels; the limit is {limits.max_pixels} pixels")
        image.seek(0)
        image.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name} is too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageInputError(f"{name} is not an image format Pillow can decode") from exc
    except Exception as exc:  # Pillow's plugins raise many types on malformed data (struct.error, IndexError...)
        raise ImageInputError(f"{name} is damaged or truncated ({type(exc).__name__}: {exc})") from exc
    try:
        return to_rgb(ImageOps.exif_transpose(image) or image)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # modes without an RGB conversion, malformed EXIF
        raise ImageInputError(f"{name} cannot be converted to RGB ({type(exc).__name__}: {exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white and 16/32-bit greys scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = grey_to_8_bits(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # alpha, or a colour key
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def grey_to_8_bits(image: Image.Image) -> Image.Image:
    """An 8-bit grey image of a 16-bit, 32-bit or float one, scaled from its range: 0..1 for floats
    that stay within it (the usual float convention), else 0..255 or 0..65535 as the values need."""
    array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(array.max(initial=0.0))
    if image.mode == "F" and peak <= 1.0:
        top = 1.0
    elif image.mode.startswith("I;16") or peak > 255:
        top = 65535.0
    else:
        top = 255.0
    scaled = array / top * 255.0
    if top == 1.0:  # fractions round to the nearest level; wider values are cut to their level, as before
        scaled = scaled.round()
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def load_image(source: str, limits: ImageLimits = ImageLimits()) -> LoadedImage:
    """Read and decode one image argument; every failure is an `ImageInputError` naming the problem."""
    data, path = read_image_bytes(source, limits)
    kind = "image URL" if path and is_web_url(path) else "image file"
    name = f"{kind} {describe(path)}" if path else "image data"
    image = decode_image(data, limits, name)
    return LoadedImage(image=image, sha256=hashlib.sha256(data).hexdigest(), source_path=path)


def pixels_sha256(image: Image.Image) -> str:
    """sha256 of an image's decoded pixels (mode, size and bytes): one id for one picture, however made."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
