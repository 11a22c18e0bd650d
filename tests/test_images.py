"""Image input: every accepted form decodes to RGB; every bad input is a clear ImageInputError."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.errors import ImageInputError
from rar_tools.images import ImageLimits, LoadedImage, load_image, store_image, stored_image_path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_absolute_path_decodes_to_rgb(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", png_bytes(Image.new("L", (10, 8), 128)))
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (10, 8)
    assert loaded.source_path == str(Path(path).resolve())


def test_base64_and_data_url_give_the_same_image_and_hash(tmp_path: Path) -> None:
    data = png_bytes(Image.new("RGB", (5, 5), (1, 2, 3)))
    plain = load_image(base64.b64encode(data).decode())
    url = load_image("data:image/png;base64," + base64.b64encode(data).decode())
    from_file = load_image(write(tmp_path, "x.png", data))
    assert plain.sha256 == url.sha256 == from_file.sha256 == hashlib.sha256(data).hexdigest()
    assert plain.source_path is None and url.image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("", "empty"),
        ("relative/path.png", "neither an absolute file path"),
        ("/no/such/file.png", "does not exist"),
        ("data:text/plain;base64,aGVsbG8=", "only image/"),
        ("data:image/png;base64,@@@notbase64@@@", "not valid base64"),
        ("https://example.com/bird.jpg", "URLs are not fetched"),
    ],
    ids=["empty", "relative", "missing", "wrong-data-url-type", "bad-base64", "url"],
)
def test_bad_sources_are_refused_with_a_clear_message(source: str, expected: str) -> None:
    with pytest.raises(ImageInputError, match=expected):
        load_image(source)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="is not a file"):
        load_image(str(tmp_path))


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="empty"):
        load_image(write(tmp_path, "zero.png", b""))


def test_non_image_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="not an image format"):
        load_image(write(tmp_path, "notes.png", b"just some text, not pixels" * 10))


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_image(write(tmp_path, "cut.jpg", buffer.getvalue()[:400]))


def test_file_over_the_byte_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "big.png", png_bytes(Image.new("RGB", (200, 200))) + b"\0" * 4096)
    with pytest.raises(ImageInputError, match="the limit is 2048"):
        load_image(path, ImageLimits(max_bytes=2048))


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, decompression_bomb: bytes) -> None:
    with pytest.raises(ImageInputError, match="pixels"):
        load_image(write(tmp_path, "bomb.png", decompression_bomb))


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "a.png", png_bytes(Image.new("RGB", (100, 100))))
    with pytest.raises(ImageInputError, match="100x100 pixels; the limit is 5000"):
        load_image(path, ImageLimits(max_pixels=5000))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(str(path)).image.size == (20, 40)


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = write(tmp_path, "t.png", png_bytes(Image.new("RGBA", (4, 4), (0, 0, 0, 0))))
    assert load_image(path).image.getpixel((0, 0)) == (255, 255, 255)


def test_palette_image_converts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.png",
        png_bytes(Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)),
    )
    assert load_image(path).image.getpixel((1, 1)) == (10, 200, 30)


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    array = np.full((4, 4), 65535, dtype=np.uint16)
    path = write(tmp_path, "g16.png", png_bytes(Image.fromarray(array)))
    assert load_image(path).image.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("value, expected", [(0.5, 128), (1.0, 255), (200.0, 200)], ids=["half", "one", "above-one"])
def test_float_tiff_is_scaled_from_0_to_1_when_its_values_stay_within(
    tmp_path: Path, value: float, expected: int
) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.full((4, 4), value, dtype=np.float32), "F").save(path)
    assert load_image(str(path)).image.getpixel((0, 0)) == (expected,) * 3


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)
    red, green, blue = load_image(str(path)).image.getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in [(250, 0, 0), (0, 0, 250)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    red, _, blue = load_image(str(path)).image.getpixel((3, 3))
    assert red > 200 and blue < 50


def test_stored_copy_is_bounded_and_content_addressed(tmp_path: Path) -> None:
    loaded = LoadedImage(Image.new("RGB", (3000, 1000)), "ab" + "0" * 62, None)
    path = store_image(tmp_path, loaded, max_side=512)
    assert path == stored_image_path(tmp_path, loaded.sha256)
    assert max(Image.open(path).size) == 512
    assert not list(path.parent.glob(".tmp-*"))


@pytest.mark.parametrize("source", ["~\x00", "/tmp/a\x00b.png", "file:///x\x00"])
def test_paths_with_nul_characters_are_refused(source: str) -> None:
    with pytest.raises(ImageInputError, match="NUL character"):
        load_image(source)


ACCEPTED_FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]
BASE64_FORMS = {
    "plain": lambda data: base64.b64encode(data).decode(),
    "wrapped-76": lambda data: base64.encodebytes(data).decode(),  # what the `base64` command writes
    "url-safe": lambda data: base64.urlsafe_b64encode(data).decode(),
}


@pytest.mark.parametrize("form", sorted(BASE64_FORMS))
@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_base64_of_every_accepted_format_is_read_as_an_image(fmt: str, form: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 40, 40)).save(buffer, format=fmt)
    loaded = load_image(BASE64_FORMS[form](buffer.getvalue()))
    assert loaded.image.size == (30, 20) and loaded.source_path is None


def test_a_jpeg_base64_starting_with_a_slash_is_data_not_a_path() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    text = base64.b64encode(buffer.getvalue()).decode()
    assert text.startswith("/9j/")
    limits = ImageLimits(allowed_dirs=(Path("/nonexistent-allowed-folder"),))  # a path here would be refused
    assert load_image(text, limits).image.size == (8, 8)


def test_a_path_is_still_a_path_when_it_is_not_base64_of_an_image(tmp_path: Path) -> None:
    path = write(tmp_path, "abcdefghijklmnopqrstuvwxyz.png", png_bytes(Image.new("RGB", (3, 3))))
    assert load_image(path).source_path == str(Path(path).resolve())
