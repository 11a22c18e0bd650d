"""Image input, pinned values: how each pixel format becomes 8-bit RGB, every accepted spelling of a
source, and behaviour exactly at the byte and pixel limits."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.errors import ImageInputError
from rar_tools.images import ImageLimits, decode_base64, load_image, pixels_sha256


def encoded(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def row_of(values: list, dtype: type) -> Image.Image:
    """A one-row image of `values` in the mode numpy's `dtype` gives."""
    return Image.fromarray(np.array([values], dtype=dtype))


def loaded_pixels(tmp_path: Path, data: bytes, name: str = "x.png") -> list[tuple[int, int, int]]:
    image = load_image(str(write(tmp_path, name, data))).image
    return [tuple(pixel) for pixel in np.asarray(image).reshape(-1, 3).tolist()]


# -- pixel formats ---------------------------------------------------------------------------------
def test_sixteen_bit_grey_is_scaled_by_its_full_range(tmp_path: Path) -> None:
    # v / 65535 * 255, rounded down: 357 -> 1.39, 32996 -> 128.39
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 357, 32996, 65535], np.uint16)))
    assert pixels == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


def test_a_dark_sixteen_bit_image_stays_dark(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 200, 255, 520], np.uint16)))
    assert pixels == [(0, 0, 0), (0, 0, 0), (0, 0, 0), (2, 2, 2)]


def test_thirty_two_bit_grey_within_eight_bits_is_kept(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 7, 200, 255], np.int32), "TIFF"), "i.tif")
    assert pixels == [(0, 0, 0), (7, 7, 7), (200, 200, 200), (255, 255, 255)]


def test_thirty_two_bit_grey_past_eight_bits_is_scaled_as_sixteen_bit(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 357, 32996, 65535], np.int32), "TIFF"), "i.tif")
    assert pixels == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


def test_float_grey_is_clipped_to_eight_bits(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([-5.0, 7.6, 200.2, 255.0], np.float32), "TIFF"), "f.tif")
    assert pixels == [(0, 0, 0), (7, 7, 7), (200, 200, 200), (255, 255, 255)]


def test_alpha_is_composited_on_white_in_proportion(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (0, 0, 0, 128), (10, 20, 30, 255)])
    assert loaded_pixels(tmp_path, encoded(image)) == [(255, 255, 255), (127, 127, 127), (10, 20, 30)]


def test_grey_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("LA", (3, 1))
    image.putdata([(50, 0), (50, 255), (0, 128)])
    assert loaded_pixels(tmp_path, encoded(image)) == [(255, 255, 255), (50, 50, 50), (127, 127, 127)]


def test_transparent_palette_entry_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([9, 9, 9, 200, 100, 50] + [0] * 762)
    image.putdata([0, 1])
    assert loaded_pixels(tmp_path, encoded(image, transparency=0)) == [(255, 255, 255), (200, 100, 50)]


def test_rgb_colour_key_becomes_white(tmp_path: Path) -> None:
    image = Image.new("RGB", (2, 1))
    image.putdata([(10, 20, 30), (40, 50, 60)])
    assert loaded_pixels(tmp_path, encoded(image, transparency=(10, 20, 30))) == [(255, 255, 255), (40, 50, 60)]


def test_pixels_sha256_hashes_mode_size_and_bytes() -> None:
    image = Image.new("RGB", (2, 1))
    image.putdata([(1, 2, 3), (4, 5, 6)])
    assert pixels_sha256(image) == hashlib.sha256(b"RGB:2x1:" + bytes([1, 2, 3, 4, 5, 6])).hexdigest()


# -- sources -----------------------------------------------------------------------------------------
PICTURE = Image.fromarray(np.random.default_rng(7).integers(0, 255, (6, 8, 3), dtype=np.uint8))
DATA = encoded(PICTURE)
SHA = hashlib.sha256(DATA).hexdigest()


def test_base64_has_standard_and_url_safe_letters() -> None:
    standard = base64.b64encode(DATA).decode()
    assert "+" in standard and "/" in standard  # so the URL-safe spelling below differs


@pytest.mark.parametrize(
    "spell",
    [
        lambda data: base64.b64encode(data).decode(),
        lambda data: base64.urlsafe_b64encode(data).decode(),
        lambda data: base64.b64encode(data).decode().rstrip("="),
        lambda data: base64.encodebytes(data).decode(),
        lambda data: "data:image/png;base64," + base64.b64encode(data).decode(),
        lambda data: "DATA:IMAGE/PNG;name=bird.png;BASE64," + base64.urlsafe_b64encode(data).decode(),
        lambda data: "  " + base64.b64encode(data).decode() + "\n",
    ],
    ids=["standard", "url-safe", "unpadded", "line-wrapped", "data-url", "data-url-params-upper-case", "spaces"],
)
def test_every_base64_spelling_gives_the_same_bytes(spell) -> None:
    loaded = load_image(spell(DATA))
    assert (loaded.sha256, loaded.source_path) == (SHA, None)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(PICTURE))


def test_file_url_reads_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bird.png", DATA)
    loaded = load_image(f"file://{path}")
    assert (loaded.sha256, loaded.source_path) == (SHA, str(path.resolve()))


def test_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "bird.png", DATA)
    assert load_image("~/bird.png").source_path == str((tmp_path / "bird.png").resolve())


def test_a_windows_drive_path_is_read_as_a_path() -> None:
    with pytest.raises(ImageInputError, match=r"^image path 'C:/birds/jay\.png' is not absolute$"):
        load_image("C:/birds/jay.png")


def test_base64_needs_sixteen_characters() -> None:
    with pytest.raises(ImageInputError, match="neither an absolute file path nor base64"):
        load_image("A" * 15)
    with pytest.raises(ImageInputError, match="^image data is not an image format Pillow can decode$"):
        load_image("A" * 16)


def test_data_url_without_a_type_is_refused() -> None:
    with pytest.raises(ImageInputError, match="^data URL has type 'none'; only image/"):
        load_image("data:;base64," + base64.b64encode(DATA).decode())


def test_empty_base64_is_refused() -> None:
    with pytest.raises(ImageInputError, match="^base64 image decodes to zero bytes$"):
        load_image("data:image/png;base64,")


def test_errors_name_the_file_they_come_from(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.png", b"not pixels at all")
    with pytest.raises(ImageInputError, match=r"^image file '/.*' is not an image format Pillow can decode$"):
        load_image(str(path))


# -- limits ------------------------------------------------------------------------------------------
def padded_png(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes (decoders ignore bytes after the end chunk)."""
    return DATA + b"\0" * (size - len(DATA))


def test_a_file_of_exactly_the_byte_limit_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "x.png", padded_png(1000))
    assert load_image(str(path), ImageLimits(max_bytes=1000)).image.size == (8, 6)


def test_a_file_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x.png", padded_png(1000))
    with pytest.raises(ImageInputError, match="has 1000 bytes; the limit is 999$"):
        load_image(str(path), ImageLimits(max_bytes=999))


def test_base64_of_exactly_the_byte_limit_is_decoded() -> None:
    text = base64.b64encode(padded_png(999)).decode()  # 999 bytes: 1332 letters, no padding
    assert len(decode_base64(text, ImageLimits(max_bytes=999))) == 999
    with pytest.raises(ImageInputError, match="^base64 image is over the limit of 998 bytes$"):
        decode_base64(text, ImageLimits(max_bytes=998))


@pytest.mark.parametrize(("max_pixels", "accepted"), [(48, True), (47, False)])
def test_the_pixel_limit_is_inclusive(tmp_path: Path, max_pixels: int, accepted: bool) -> None:
    path = str(write(tmp_path, "x.png", DATA))  # 8 x 6 = 48 pixels
    if accepted:
        assert load_image(path, ImageLimits(max_pixels=max_pixels)).image.size == (8, 6)
    else:
        with pytest.raises(ImageInputError, match="is 8x6 pixels; the limit is 47 pixels$"):
            load_image(path, ImageLimits(max_pixels=max_pixels))
