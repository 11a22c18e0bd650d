"""Image input, pinned values: how each pixel format becomes 8-bit RGB, every accepted spelling of a
source, and behaviour exactly at the byte and pixel limits."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.errors import ImageInputError
from rar_tools.images import ImageLimits, decode_base64, decode_image, load_image, pixels_sha256, to_rgb


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
    # v / 65535 * 255, rounded down: 357 -> 1.39, 25950 -> 100.97, 32996 -> 128.39
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 357, 25950, 32996, 65535], np.uint16)))
    assert pixels == [(0, 0, 0), (1, 1, 1), (100, 100, 100), (128, 128, 128), (255, 255, 255)]


def test_a_dark_sixteen_bit_image_stays_dark(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 200, 255], np.uint16)))  # all under 256 of 65535
    assert pixels == [(0, 0, 0), (0, 0, 0), (0, 0, 0)]


def test_big_endian_sixteen_bit_grey_is_scaled_too(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 357, 25950, 65535], ">u2"), "TIFF"), "be.tif")
    assert pixels == [(0, 0, 0), (1, 1, 1), (100, 100, 100), (255, 255, 255)]


def test_thirty_two_bit_grey_within_eight_bits_is_kept(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 7, 200, 255], np.int32), "TIFF"), "i.tif")
    assert pixels == [(0, 0, 0), (7, 7, 7), (200, 200, 200), (255, 255, 255)]


def test_thirty_two_bit_grey_past_eight_bits_is_scaled_as_sixteen_bit(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0, 357, 32996, 65535], np.int32), "TIFF"), "i.tif")
    assert pixels == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize(("values", "expected"), [([0, 7, 256], [0, 0, 0]), ([0, 65535, 70000], [0, 255, 255])])
def test_thirty_two_bit_grey_over_255_is_read_as_sixteen_bit_and_clipped(
    tmp_path: Path, values: list[int], expected: list[int]
) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of(values, np.int32), "TIFF"), "i.tif")
    assert pixels == [(v, v, v) for v in expected]


def test_float_grey_past_eight_bits_is_scaled_as_sixteen_bit(tmp_path: Path) -> None:
    pixels = loaded_pixels(tmp_path, encoded(row_of([0.0, 357.0, 65535.0], np.float32), "TIFF"), "f.tif")
    assert pixels == [(0, 0, 0), (1, 1, 1), (255, 255, 255)]


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


def test_palette_with_alpha_is_composited_on_white() -> None:
    image = Image.new("PA", (2, 1))
    image.putpalette([9, 9, 9, 200, 100, 50] + [0] * 762)
    image.putdata([(0, 0), (1, 255)])
    assert list(np.asarray(to_rgb(image)).reshape(-1, 3).tolist()) == [[255, 255, 255], [200, 100, 50]]


def test_a_palette_with_alpha_entries_is_composited_on_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([9, 9, 9, 0, 200, 100, 50, 255], "RGBA")
    image.putdata([0, 1])
    assert list(np.asarray(to_rgb(image)).reshape(-1, 3).tolist()) == [[255, 255, 255], [200, 100, 50]]


def test_little_endian_sixteen_bit_grey_is_scaled() -> None:
    image = Image.new("I;16L", (2, 1))
    image.putpixel((1, 0), 25950)
    assert list(np.asarray(to_rgb(image)).reshape(-1, 3).tolist()) == [[0, 0, 0], [100, 100, 100]]


def grey_tiff_with_two_x_resolutions() -> bytes:
    """A 1x1 grey TIFF (value 128) whose XResolution tag holds two values: Pillow decodes it with a warning.
    Header 8 bytes, directory 2 + 10 x 12 + 4: the two resolutions at byte 134, the pixel at 150."""
    tags = [(256, 4, 1, 1), (257, 4, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    tags += [(273, 4, 1, 150), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 1, 1), (282, 5, 2, 134)]
    directory = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<IIII", 72, 1, 300, 1) + b"\x80"


def test_pillows_notes_on_odd_metadata_neither_escape_nor_refuse() -> None:
    with warnings.catch_warnings(record=True) as shown:  # a warning that escaped would be recorded here
        image = decode_image(grey_tiff_with_two_x_resolutions(), ImageLimits())
    assert [str(w.message) for w in shown] == []
    assert image.getpixel((0, 0)) == (128, 128, 128)


def test_grey_colour_key_becomes_white(tmp_path: Path) -> None:
    image = Image.new("L", (2, 1))
    image.putdata([50, 80])
    assert loaded_pixels(tmp_path, encoded(image, transparency=50)) == [(255, 255, 255), (80, 80, 80)]


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


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("  ", r"image is empty: give an absolute file path, base64 data or a data: URL"),
        (
            "http://example.com/bird.jpg",
            r"image URLs are not fetched \(the server was not started with --allow-urls\): "
            r"give an absolute file path, base64 or a data: URL",
        ),
        ("HTTPS://example.com/bird.jpg", r"image URLs are not fetched .*"),
        (
            "relative/bird.png",
            r"image 'relative/bird.png' is neither an absolute file path nor base64 data nor a data: URL",
        ),
        ("c:/birds/jay.png", r"image path 'c:/birds/jay.png' is not absolute"),
        ("/tmp/a\x00b.png", r"image path '/tmp/a\\x00b.png' contains a NUL character"),
        ("~nosuchuser4rar/bird.png", r"image path '~nosuchuser4rar/bird.png' cannot be expanded \(.+\)"),
        ("data:;base64," + "A" * 20, r"data URL has type 'none'; only image/\* data URLs are accepted"),
        ("data:image/png;base64,", r"base64 image decodes to zero bytes"),
        ("/" + "a" * 300 + ".png", r"image file '/a+\.\.\. \(305 chars\)' cannot be read: File name too long"),
    ],
    ids=[
        "blank",
        "http-url",
        "upper-case-https-url",
        "relative",
        "lower-case-drive",
        "nul",
        "unknown-user",
        "untyped-data-url",
        "empty-data-url",
        "name-too-long",
    ],
)
def test_a_refused_source_gets_a_message_naming_it(source: str, message: str) -> None:
    with pytest.raises(ImageInputError, match=f"^{message}$"):
        load_image(source)


def test_a_folder_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match=r"^image path '/.*' is not a file: it is a folder$"):
        load_image(str(tmp_path))


def test_a_device_is_not_a_regular_file() -> None:
    with pytest.raises(ImageInputError, match="^image path '/dev/null' is not a file: it is not a regular file$"):
        load_image("/dev/null")


def test_base64_with_a_stray_character_is_refused() -> None:
    text = base64.b64encode(DATA).decode()
    with pytest.raises(ImageInputError, match="^image is not valid base64"):
        load_image("data:image/png;base64," + text[:40] + "!" + text[40:])


def test_decoding_errors_name_the_image() -> None:
    with pytest.raises(ImageInputError, match="^image is not an image format Pillow can decode$"):
        decode_image(b"not pixels" * 3, ImageLimits())


def test_a_truncated_file_reports_the_decoder_error(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match=r"^image file '/.*' is damaged or truncated \(OSError: "):
        load_image(str(write(tmp_path, "cut.png", DATA[:60])))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (its data is one empty row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_pillows_decompression_bomb_warning_is_a_refusal() -> None:
    # 10^8 pixels: within our limit here, past Pillow's own warning level (89.5 million)
    with pytest.raises(ImageInputError, match=r"^image data is too large to decode safely \("):
        decode_image(png_header(10_000, 10_000), ImageLimits(max_pixels=200_000_000), name="image data")


def test_errors_name_the_file_they_come_from(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.png", b"not pixels at all")
    with pytest.raises(ImageInputError, match=r"^image file '/.*' is not an image format Pillow can decode$"):
        load_image(str(path))


# -- limits ------------------------------------------------------------------------------------------
def padded_png(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes (decoders ignore bytes after the end chunk)."""
    return DATA + b"\0" * (size - len(DATA))


def test_a_file_of_exactly_the_byte_limit_is_read_whole(tmp_path: Path) -> None:
    data = padded_png(1000)
    loaded = load_image(str(write(tmp_path, "x.png", data)), ImageLimits(max_bytes=1000))
    assert (loaded.image.size, loaded.sha256) == ((8, 6), hashlib.sha256(data).hexdigest())


def test_a_file_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x.png", padded_png(1000))
    with pytest.raises(ImageInputError, match="has 1000 bytes; the limit is 999$"):
        load_image(str(path), ImageLimits(max_bytes=999))


def test_base64_of_exactly_the_byte_limit_is_decoded() -> None:
    text = base64.b64encode(padded_png(999)).decode()  # 999 bytes: 1332 letters, no padding
    assert len(decode_base64(text, ImageLimits(max_bytes=999))) == 999
    with pytest.raises(ImageInputError, match="^base64 image is over the limit of 998 bytes$"):
        decode_base64(text, ImageLimits(max_bytes=998))


def test_unpadded_base64_of_exactly_the_byte_limit_is_decoded() -> None:
    text = base64.b64encode(padded_png(1000)).decode().rstrip("=")  # 1334 letters: 1000.5 bytes by 3/4
    assert len(decode_base64(text, ImageLimits(max_bytes=1000))) == 1000


@pytest.mark.parametrize(("max_pixels", "accepted"), [(48, True), (47, False)])
def test_the_pixel_limit_is_inclusive(tmp_path: Path, max_pixels: int, accepted: bool) -> None:
    path = str(write(tmp_path, "x.png", DATA))  # 8 x 6 = 48 pixels
    if accepted:
        assert load_image(path, ImageLimits(max_pixels=max_pixels)).image.size == (8, 6)
    else:
        with pytest.raises(ImageInputError, match="is 8x6 pixels; the limit is 47 pixels$"):
            load_image(path, ImageLimits(max_pixels=max_pixels))
