"""Exemplar files: content-addressed JPEG copies, written whole or not at all, and tidied after a crash."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rar_tools
from rar_tools.errors import ExemplarFileError
from rar_tools.images import LoadedImage
from rar_tools.memory.files import (
    PARTIAL_PREFIX,
    ExemplarFiles,
    read_exemplar,
    remove_partial_files,
    store_image,
    stored_image_path,
    sync_folder,
    thumbnail_jpeg,
)

SHA = "ab" + "12" * 31


def picture(size: tuple[int, int] = (300, 200), mode: str = "RGB", seed: int = 0) -> LoadedImage:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
    return LoadedImage(Image.fromarray(pixels, mode), SHA, None)


def quantization_at(quality: int) -> dict:
    """The quantisation tables Pillow's JPEG encoder uses at `quality`."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", quality=quality)
    return Image.open(buffer).quantization


def test_a_copy_lives_under_the_first_two_letters_of_its_sha(tmp_path: Path) -> None:
    assert stored_image_path(tmp_path, SHA) == tmp_path / "ab" / f"{SHA}.jpg"


def test_a_stored_copy_is_a_quality_92_jpeg_bounded_to_max_side(tmp_path: Path) -> None:
    path = store_image(tmp_path, picture((300, 200)), max_side=150)
    with Image.open(path) as stored:
        assert (stored.format, stored.size) == ("JPEG", (150, 100))
        assert stored.quantization == quantization_at(92)


def test_a_stored_copy_is_the_lanczos_reduction_saved_as_jpeg(tmp_path: Path) -> None:
    loaded = picture((300, 200))
    reduced = loaded.image.copy()
    reduced.thumbnail((150, 150), Image.Resampling.LANCZOS)
    expected = io.BytesIO()
    reduced.save(expected, format="JPEG", quality=92)
    assert store_image(tmp_path, loaded, max_side=150).read_bytes() == expected.getvalue()


def test_copies_sharing_a_folder_are_both_kept(tmp_path: Path) -> None:
    first = store_image(tmp_path, picture(seed=1), max_side=32)
    other = LoadedImage(picture(seed=2).image, "ab" + "34" * 31, None)
    second = store_image(tmp_path, other, max_side=32)
    assert first.parent == second.parent and first.is_file() and second.is_file()


def test_an_existing_copy_is_reused_not_rewritten(tmp_path: Path) -> None:
    first = store_image(tmp_path, picture(seed=1), max_side=64)
    written = first.read_bytes()
    again = store_image(tmp_path, picture(seed=2), max_side=64)  # same sha256, other pixels
    assert again == first and again.read_bytes() == written


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot write mode RGBA as JPEG"):
        store_image(tmp_path, picture(mode="RGBA"), max_side=64)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_thumbnail_is_a_small_jpeg_of_the_stored_copy(tmp_path: Path) -> None:
    path = store_image(tmp_path, picture((300, 200)), max_side=300)
    with Image.open(io.BytesIO(thumbnail_jpeg(path, max_side=60, quality=50))) as thumb:
        assert (thumb.format, thumb.size, thumb.quantization) == ("JPEG", (60, 40), quantization_at(50))
    with Image.open(io.BytesIO(thumbnail_jpeg(path))) as default:
        assert (default.size, default.quantization) == ((128, 85), quantization_at(80))


def test_a_thumbnail_is_the_lanczos_reduction_saved_as_jpeg(tmp_path: Path) -> None:
    path = store_image(tmp_path, picture((300, 200)), max_side=300)
    with Image.open(path) as stored:
        reduced = stored.convert("RGB")
    reduced.thumbnail((60, 60), Image.Resampling.LANCZOS)
    expected = io.BytesIO()
    reduced.save(expected, format="JPEG", quality=50)
    assert thumbnail_jpeg(path, max_side=60, quality=50) == expected.getvalue()


def test_a_thumbnail_of_a_grey_file_is_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.jpg"
    Image.new("L", (40, 20), 90).save(path)
    with Image.open(io.BytesIO(thumbnail_jpeg(path, max_side=20))) as thumb:
        assert (thumb.mode, thumb.size) == ("RGB", (20, 10))


def test_every_partial_file_is_counted(tmp_path: Path) -> None:
    for folder, name in (("ab", "x"), ("ab", "y"), ("cd", "z")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{PARTIAL_PREFIX}{name}.jpg").write_bytes(b"")
    assert remove_partial_files(tmp_path) == 3
    assert list(tmp_path.rglob("*.jpg")) == []


WRITE_A_LARGE_COPY = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from rar_tools.images import LoadedImage
from rar_tools.memory.files import store_image
pixels = np.random.default_rng(0).integers(0, 255, (6000, 6000, 3), dtype=np.uint8)  # seconds to encode
store_image(Path(sys.argv[1]), LoadedImage(Image.fromarray(pixels), sys.argv[2], None), max_side=6000)
"""


def test_a_writer_killed_mid_write_leaves_only_a_partial_file_that_is_tidied(tmp_path: Path) -> None:
    package_root = str(Path(rar_tools.__file__).resolve().parent.parent)  # the package under test
    env = {**os.environ, "PYTHONPATH": package_root, "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen([sys.executable, "-c", WRITE_A_LARGE_COPY, str(tmp_path), SHA], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (partials := list(tmp_path.glob(f"ab/{PARTIAL_PREFIX}*"))) and writer.poll() is None:
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.005)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert len(partials) == 1 and not stored_image_path(tmp_path, SHA).exists()
    assert remove_partial_files(tmp_path) == 1 and list(tmp_path.rglob("*.*")) == []
    assert store_image(tmp_path, picture(), max_side=32) == stored_image_path(tmp_path, SHA)  # a new write works


def test_partial_files_are_removed_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kept = store_image(tmp_path, picture(), max_side=32)
    partial = kept.parent / f"{PARTIAL_PREFIX}abc.jpg"
    partial.write_bytes(b"half")
    with caplog.at_level(logging.INFO, logger="rar_tools.memory.files"):
        assert remove_partial_files(tmp_path) == 1
    assert not partial.exists() and kept.exists()
    assert caplog.messages == [f"removed a half-written exemplar file left by an interrupted add: {partial.name}"]


def test_syncing_a_missing_folder_is_harmless(tmp_path: Path) -> None:
    sync_folder(tmp_path / "absent")
    sync_folder(tmp_path)


def test_exemplar_files_record_paths_relative_to_the_data_folder(tmp_path: Path) -> None:
    files = ExemplarFiles(tmp_path)
    recorded = files.write(picture(), max_side=32)
    assert recorded == f"images/ab/{SHA}.jpg"
    assert files.resolve(recorded) == files.path(SHA) == tmp_path / "images" / "ab" / f"{SHA}.jpg"
    assert files.path(SHA).is_file()


def test_exemplar_files_delete_and_tidy(tmp_path: Path) -> None:
    files = ExemplarFiles(tmp_path)
    files.write(picture(), max_side=32)
    (files.images_dir / "ab" / f"{PARTIAL_PREFIX}x.jpg").write_bytes(b"")
    assert files.tidy() == 1
    files.delete([SHA, "cd" + "0" * 62])  # a copy that is not there is no error
    assert not files.path(SHA).exists()


def test_reading_an_exemplar_gives_its_exact_bytes(tmp_path: Path) -> None:
    path = store_image(tmp_path, picture(), max_side=32)
    assert read_exemplar(path, "exemplar entry 'e1'") == path.read_bytes()


def test_a_missing_exemplar_copy_is_named_with_the_way_out(tmp_path: Path) -> None:
    message = "the stored copy of exemplar entry 'e1' is missing (gone.jpg); remove the entry and add the image again"
    with pytest.raises(ExemplarFileError) as caught:
        read_exemplar(tmp_path / "gone.jpg", "exemplar entry 'e1'")
    assert str(caught.value) == message


def test_an_unreadable_exemplar_copy_says_why(tmp_path: Path) -> None:
    with pytest.raises(ExemplarFileError) as caught:
        read_exemplar(tmp_path, "exemplar entry 'e1'")  # a folder where the copy should be
    assert str(caught.value) == "the stored copy of exemplar entry 'e1' cannot be read: Is a directory"


def test_a_damaged_exemplar_copy_is_refused_with_pillows_reason(tmp_path: Path) -> None:
    path = tmp_path / "damaged.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    message = (
        "the stored copy of exemplar entry 'e1' is damaged (OSError: Truncated File Read); "
        "remove the entry and add the image again"
    )
    with pytest.raises(ExemplarFileError) as caught:
        read_exemplar(path, "exemplar entry 'e1'")
    assert str(caught.value) == message


def test_a_thumbnail_of_a_missing_copy_names_an_exemplar_unless_told(tmp_path: Path) -> None:
    with pytest.raises(ExemplarFileError) as caught:
        thumbnail_jpeg(tmp_path / "gone.jpg")
    assert str(caught.value).startswith("the stored copy of an exemplar is missing (gone.jpg)")


def test_stored_copies_are_listed_by_sha_without_partial_or_foreign_files(tmp_path: Path) -> None:
    files = ExemplarFiles(tmp_path)
    assert list(files.stored_shas()) == []  # no images folder yet
    later, earlier = "cd" + "0" * 62, "ab" + "0" * 62
    for sha in (later, earlier):
        files.write(LoadedImage(picture().image, sha, None), max_side=32)
    (files.images_dir / "ab" / f"{PARTIAL_PREFIX}x.jpg").write_bytes(b"")
    (files.images_dir / "ab" / "notes.jpg").write_bytes(b"")
    (files.images_dir / "abc").mkdir()
    (files.images_dir / "abc" / f"{earlier}.jpg").write_bytes(b"")
    (files.images_dir / "ef").write_bytes(b"")  # a file, not a folder
    assert list(files.stored_shas()) == [earlier, later]


def test_deleting_copies_counts_those_that_existed(tmp_path: Path) -> None:
    files = ExemplarFiles(tmp_path)
    other = "cd" + "0" * 62
    files.write(picture(), max_side=32)
    files.write(LoadedImage(picture().image, other, None), max_side=32)
    assert files.delete([SHA, other, "ef" + "0" * 62]) == 2
    assert files.delete([SHA]) == 0


def test_an_imported_copy_is_written_byte_for_byte_once(tmp_path: Path) -> None:
    files = ExemplarFiles(tmp_path)
    assert files.write_copy(SHA, b"jpeg bytes") == f"images/ab/{SHA}.jpg"
    assert files.write_copy(SHA, b"other bytes") == f"images/ab/{SHA}.jpg"  # an existing copy is kept
    assert files.path(SHA).read_bytes() == b"jpeg bytes"
    assert [p.name for p in files.path(SHA).parent.iterdir()] == [f"{SHA}.jpg"]  # no partial file left
