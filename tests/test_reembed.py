"""Re-embedding a memory with another CLIP encoder: image entries from their stored copies, label
texts through the templates, into a new memory or replacing the old one once complete; resumable
after a kill. A memory of another encoder names the command."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.errors import EncoderMismatchError
from rar_tools.memory import MemoryStore
from rar_tools.services.upkeep import REEMBED_CHUNK, staging_name
from rar_tools.settings import Settings
from rar_tools.testing.tiny_models import write_tiny_clip

MEMORY_BACKENDS = ["embedded", "chroma-server"]


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second tiny CLIP (other random weights, other folder): another encoder identity."""
    return f"local-dir:{write_tiny_clip(tmp_path_factory.mktemp('other-clip'), seed=1)}"


@pytest.fixture
def old(tools: RarTools, image_folder: Path) -> RarTools:
    """Memory 'colours', filled by the tiny CLIP: two exemplars of red and blue, two label texts."""
    for colour in ("red", "blue"):
        tools.add_images("colours", [str(image_folder / colour / f"{n}.png") for n in range(2)], colour)
    tools.add_labels("colours", ["red", "blue"], category="colour")
    tools.close()
    return tools


def with_clip(tools: RarTools, clip_model: str) -> RarTools:
    return RarTools(tools.settings.model_copy(update={"clip_model": clip_model}))


def test_a_memory_of_another_encoder_names_the_reembed_command(old: RarTools, other_clip: str, image_folder) -> None:
    with pytest.raises(EncoderMismatchError, match="rar-tools reembed colours --clip-model"):
        with_clip(old, other_clip).retrieve("colours", str(image_folder / "red" / "2.png"))


def test_reembed_replaces_the_memory_once_it_is_complete(old: RarTools, other_clip: str, image_folder: Path) -> None:
    new = with_clip(old, other_clip)
    before = new.list_memories(memory="colours").memories[0]
    result = new.reembed("colours")
    after = new.list_memories().memories
    assert (result.encoded, result.already_done, result.count, result.replaced) == (6, 0, 6, True)
    assert [m.name for m in after] == ["colours"] and after[0].labels == before.labels
    assert after[0].encoder.model == other_clip and after[0].kinds == {"image": 4, "text": 2}
    candidates = new.retrieve("colours", str(image_folder / "red" / "2.png"), k=2, mode="image").candidates
    assert {c.label for c in candidates} == {"red", "blue"}


def test_reembedded_entries_keep_the_ids_a_fresh_add_would_give(old: RarTools, other_clip: str, image_folder) -> None:
    new = with_clip(old, other_clip)
    new.reembed("colours")
    again = new.add_images("colours", [str(image_folder / "red" / "0.png")], "red")
    assert (again.added, again.already_present) == (0, 1)
    assert new.add_labels("colours", ["blue"], category="colour").already_present == 1


def test_reembed_as_a_new_name_keeps_the_old_memory(old: RarTools, other_clip: str) -> None:
    new = with_clip(old, other_clip)
    result = new.reembed("colours", as_name="colours-v2")
    listing = {m.name: m for m in new.list_memories().memories}
    assert (result.written_to, result.replaced) == ("colours-v2", False)
    assert listing["colours"].encoder.model == old.settings.clip_model
    assert listing["colours-v2"].encoder.model == other_clip and listing["colours-v2"].count == 6


def test_the_reembed_command_takes_the_new_encoder_from_clip_model(old: RarTools, other_clip: str, capsys) -> None:
    flags = ["--data-dir", str(old.settings.data_dir), "--clip-model", other_clip]
    if old.settings.chroma_url:
        flags += ["--chroma-url", old.settings.chroma_url, "--chroma-database", old.settings.chroma_database]
    assert main(["reembed", "colours", "--as", "colours-v2", *flags]) == 0
    assert "re-encoded 6 entries of memory 'colours'" in capsys.readouterr().out


# A re-embed as `rar-tools reembed` runs it, reporting every stored chunk on stdout.
REEMBED = """
import sys
from rar_tools.api import RarTools
from rar_tools.settings import Settings

data_dir, clip_model = sys.argv[1:]
tools = RarTools(Settings(data_dir=data_dir, clip_model=clip_model, no_ranker=True))
tools.reembed("many", progress=lambda done, total: print(done, flush=True))
"""


def test_a_reembed_killed_part_way_goes_on_where_it_stopped(tmp_path: Path, clip_model: str, other_clip: str) -> None:
    data_dir = tmp_path / "data"
    labels = [f"label {i:03d}" for i in range(4 * REEMBED_CHUNK)]
    filler = RarTools(Settings(data_dir=data_dir, clip_model=clip_model, no_ranker=True))
    filler.add_labels("many", labels)
    filler.close()
    process = subprocess.Popen([sys.executable, "-c", REEMBED, str(data_dir), other_clip], stdout=subprocess.PIPE)
    first = int(process.stdout.readline())  # one chunk re-encoded and stored
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()

    store = MemoryStore(data_dir, lock_wait_s=10)
    assert staging_name("many") in store.names() and store.count("many") == len(labels)
    new = RarTools(Settings(data_dir=data_dir, clip_model=other_clip, no_ranker=True), store=store)
    result = new.reembed("many")
    assert result.already_done >= first and result.encoded + result.already_done == len(labels)
    assert store.names() == ["many"] and store.summary("many").encoder.model == other_clip
