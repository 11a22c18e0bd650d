"""`rar-tools ranking-data`: RAR's ranking-format fine-tuning data from a memory, leave-one-out.

For each exemplar image of the memory (at most `per_label` per label, chosen with `seed`):

1. retrieve k labels for its stored embedding from the rest of the memory (the retriever of
   `retrieval.py`, searching a view of the store that leaves the query's own entry out);
2. when the true label is not among them, it replaces the k-th (least similar) candidate: the k-1
   most confusable wrong labels stay, the prompt keeps the k candidates the ranker sees at inference,
   and no sample is dropped (the paper keeps only the retrievals that hold the true class, which
   would leave out exactly the hard images a memory's rare labels give);
3. the candidates are shuffled (per sample, seeded), so the model cannot learn a position;
4. the prompt is the ranker's own (`prompts.request_prompt`, as `messages.ranking_parts` sends it) and
   the answer the list literal the parser reads: the true label first, then the other candidates
   in retrieval order.

Samples go to `OUT/train.jsonl` (`samples.py` layouts), images to `OUT/images/` (or referenced where
they lie), figures to `OUT/summary.json`. A labelled data set (any `rar-tools eval` reads) is first put in
a temporary memory of its train split, so its test images never reach the fine-tuning data.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

from rar_tools.checkpoints import is_tiny_checkpoint
from rar_tools.finetune.samples import FinetuneError, Sample, SampleFormat, sample_record
from rar_tools.limits import MIN_CANDIDATES
from rar_tools.memory.entries import Entry, Hit
from rar_tools.ranking.prompts import request_prompt, shown_names
from rar_tools.validation import check_k

if TYPE_CHECKING:
    from rar_tools.api import RarTools
    from rar_tools.evaluation.datasets import Dataset
    from rar_tools.identity import EncoderIdentity
    from rar_tools.limits import EntryKind
    from rar_tools.retrieval import SearchableMemory
    from rar_tools.settings import Settings

SAMPLES_FILE = "train.jsonl"
SUMMARY_FILE = "summary.json"
IMAGES_FOLDER = "images"
ImageHandling = Literal["copy", "reference"]
DATASET_MEMORY = "ranking-data"


@dataclass(frozen=True)
class RankingDataConfig:
    """How to write ranking data: where, k, samples per label, seed, layout, images copied or referenced."""

    out: Path
    k: int = 5
    per_label: int | None = None
    seed: int = 0
    layout: SampleFormat = "qwen"
    images: ImageHandling = "copy"
    overwrite: bool = False


class RankingDataSummary(BaseModel):
    """What an export produced (also written to OUT/summary.json)."""

    source: str = Field(description="the memory name, or the data set's folder or file")
    samples: int
    labels: int = Field(description="distinct labels among the memory's exemplar images")
    labels_covered: int = Field(description="labels with at least one sample")
    label_coverage: float = Field(description="labels_covered / labels")
    true_first: float = Field(description="share of samples whose leave-one-out retrieval had the true label first")
    true_retrieved: float = Field(description="share whose true label was among the k retrieved (not inserted)")
    inserted: int = Field(description="samples whose true label replaced the k-th retrieved label")
    k: int
    seed: int
    format: SampleFormat
    images: Literal["copy", "reference", "inline"]
    clip_model: str
    random_clip: bool = Field(description="the CLIP is the project's tiny random test checkpoint: retrieval is noise")
    out: str


class LeavingOut:
    """A store's search interface with one entry left out: what the retriever sees of a memory
    without the query's own exemplar."""

    def __init__(self, store: SearchableMemory, left_out: str) -> None:
        self.store = store
        self.left_out = left_out

    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list[Hit]:
        return self._without(self.store.nearest(name, identity, embedding, n + 1), n)

    def nearest_excluding(
        self,
        name: str,
        identity: EncoderIdentity,
        embedding: np.ndarray,
        kind: EntryKind,
        n: int,
        exclude_labels: Sequence[str],
    ) -> list[Hit]:
        return self._without(self.store.nearest_excluding(name, identity, embedding, kind, n + 1, exclude_labels), n)

    def levels(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        return self.store.levels(name, ids)

    def kinds(self, name: str) -> set[EntryKind]:
        return self.store.kinds(name)

    def generation(self, name: str) -> int:
        return self.store.generation(name)

    def _without(self, hits: list[Hit], n: int) -> list[Hit]:
        return [hit for hit in hits if hit.id != self.left_out][:n]


@dataclass(frozen=True)
class Candidates:
    """One sample's candidates: shown (shuffled), the answer order, and how retrieval did."""

    shown: list[str]
    answer: list[str]
    true_first: bool
    inserted: bool


def sample_candidates(label: str, retrieved: Sequence[str], k: int, rng: random.Random) -> Candidates:
    """The k candidates of a sample whose true label is `label`, from `retrieved` (best first)."""
    names = list(retrieved[:k])
    inserted = label not in names
    if inserted:
        names = names[: k - 1] + [label]
    answer = [label] + [name for name in names if name != label]
    shown = list(names)
    rng.shuffle(shown)
    return Candidates(shown, answer, bool(retrieved) and retrieved[0] == label, inserted)


def chosen_entries(
    entries: list[tuple[Entry, np.ndarray]], per_label: int | None, rng: random.Random
) -> list[tuple[Entry, np.ndarray]]:
    """The exemplars to make samples of: all, or `per_label` per label chosen with `rng` (in id order)."""
    by_label: dict[str, list[tuple[Entry, np.ndarray]]] = {}
    for item in sorted(entries, key=lambda pair: pair[0].id):
        by_label.setdefault(item[0].label, []).append(item)
    chosen = []
    for label in sorted(by_label):
        group = by_label[label]
        chosen += group if per_label is None or len(group) <= per_label else rng.sample(group, per_label)
    return chosen


class ImageWriter:
    """Where a sample's image is: copied into OUT/images/ (named by content), or its own path."""

    def __init__(self, out: Path, handling: ImageHandling) -> None:
        self.out = out
        self.handling = handling

    def source(self, entry: Entry) -> Path:
        """The image file of an entry: the memory's stored copy, else the file it was read from."""
        source = entry.image_path if entry.image_path is not None else Path(entry.source or "")
        if not source.is_file():
            raise FinetuneError(f"the image of entry {entry.id!r} ({source}) is missing")
        return source

    def place(self, entry: Entry, layout: SampleFormat, side: int) -> str:
        """How a sample of `layout` names the entry's image; `openai` carries it inline, downscaled to `side`
        (as the endpoint ranker sends it), the others by path."""
        source = self.source(entry)
        if layout == "openai":
            return inline_image(source, side)
        if self.handling == "reference":
            return str(source.resolve())
        name = f"{IMAGES_FOLDER}/{entry.sha256[:24]}{source.suffix.lower() or '.png'}"
        if not (self.out / name).exists():
            shutil.copyfile(source, self.out / name)
        return name


def prepare_out(config: RankingDataConfig, image_folder: bool) -> None:
    """Make OUT (and OUT/images when images are copied); refuse to replace earlier data unless told to."""
    if (config.out / SAMPLES_FILE).exists() and not config.overwrite:
        raise FinetuneError(f"{config.out / SAMPLES_FILE} exists: give --overwrite to replace it, or another --out")
    config.out.mkdir(parents=True, exist_ok=True)
    if image_folder and config.images == "copy":
        (config.out / IMAGES_FOLDER).mkdir(exist_ok=True)


def export_ranking_data(tools: RarTools, memory: str, config: RankingDataConfig, source: str | None = None):
    """Write the ranking data of `memory` (see the module's description); returns its summary."""
    from tqdm import tqdm

    from rar_tools.retrieval import Retriever

    check_k(config.k)
    if config.k < MIN_CANDIDATES:
        raise FinetuneError(f"k must be at least {MIN_CANDIDATES}: a ranking sample needs candidates to order")
    if config.per_label is not None and config.per_label < 1:
        raise FinetuneError(f"per_label must be at least 1, got {config.per_label}")
    identity, store = tools.encoder.identity, tools.store
    entries = list(store.image_entries(memory, identity))
    labels = {entry.label for entry, _ in entries}
    if len(labels) < MIN_CANDIDATES:
        raise FinetuneError(f"memory {memory!r} has exemplar images of {len(labels)} label(s): ranking needs 2 or more")
    rng = random.Random(config.seed)
    chosen = chosen_entries(entries, config.per_label, rng)
    prepare_out(config, config.layout != "openai")
    images, stats = ImageWriter(config.out, config.images), []
    partial = config.out / (SAMPLES_FILE + ".partial")  # renamed once whole: never half a samples file
    try:
        with partial.open("w", encoding="utf-8") as lines:
            for entry, embedding in tqdm(chosen, desc="ranking data", unit="sample", file=sys.stderr, disable=None):
                retriever = Retriever(LeavingOut(store, entry.id))
                found = retriever.retrieve(memory, identity, embedding, config.k, "image", tools.settings.label_score)
                candidates = sample_candidates(entry.label, [c.label for c in found.candidates], config.k, rng)
                sample = make_sample(images.place(entry, config.layout, tools.settings.ranker_image_side), candidates)
                lines.write(json.dumps(sample_record(sample, config.layout, entry.id), ensure_ascii=False) + "\n")
                stats.append((entry.label, candidates))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(config.out / SAMPLES_FILE)
    summary = summarise(source or memory, labels, stats, config, tools.settings.clip_model)
    write_atomically(config.out / SUMMARY_FILE, summary.model_dump_json(indent=2) + "\n")
    return summary


def make_sample(image: str, candidates: Candidates) -> Sample:
    """The sample of an image: the ranker's prompt for the shown candidates (cleaned as the ranker shows
    them, `prompts.shown_names`) and the answer list literal."""
    shown = shown_names(candidates.shown)
    prompt = request_prompt(shown, icl=False, context=False, exemplars=False)
    return Sample(image, prompt, repr(shown_names(candidates.answer)))


def inline_image(path: Path, side: int) -> str:
    """A JPEG data URL of the image at `path`, downscaled as the ranker shows it."""
    from PIL import Image

    from rar_tools.ranking.messages import downscale
    from rar_tools.ranking.openai_compat import image_data_url

    with Image.open(path) as image:
        return image_data_url(downscale(image, side))


def summarise(source: str, labels: set[str], stats: list, config: RankingDataConfig, clip_model: str):
    """The export's figures."""
    count = len(stats)
    covered = {label for label, _ in stats}
    tiny = clip_model.startswith("local-dir:") and is_tiny_checkpoint(Path(clip_model.removeprefix("local-dir:")))
    return RankingDataSummary(
        source=source,
        samples=count,
        labels=len(labels),
        labels_covered=len(covered),
        label_coverage=len(covered) / len(labels),
        true_first=sum(c.true_first for _, c in stats) / count if count else 0.0,
        true_retrieved=sum(not c.inserted for _, c in stats) / count if count else 0.0,
        inserted=sum(c.inserted for _, c in stats),
        k=config.k,
        seed=config.seed,
        format=config.layout,
        images="inline" if config.layout == "openai" else config.images,
        clip_model=clip_model,
        random_clip=tiny,
        out=str(config.out),
    )


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: never half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def export_dataset_ranking_data(settings: Settings, dataset: Dataset, config: RankingDataConfig):
    """Ranking data from a labelled data set's train split (labels as `eval` shows them), through a
    temporary memory of its images (never the user's data folder)."""
    from rar_tools.api import RarTools
    from rar_tools.memory import MemoryStore

    with tempfile.TemporaryDirectory(prefix="rar-tools-ranking-data-", ignore_cleanup_errors=True) as folder:
        tools = RarTools(settings, store=MemoryStore(Path(folder)))
        try:
            fill_memory(tools, dataset)
            return export_ranking_data(tools, DATASET_MEMORY, config, source=dataset.root)
        finally:
            tools.close()


def fill_memory(tools: RarTools, dataset: Dataset) -> None:
    """Encode the train split in the encoder's batches into `DATASET_MEMORY`; unreadable images are skipped."""
    from tqdm import tqdm

    from rar_tools.errors import ImageInputError
    from rar_tools.evaluation.datasets import prompt_names
    from rar_tools.memory import NewEntry

    name_of = {label: name for name, label in prompt_names(dataset.labels).items()}
    encoder, items = tools.encoder, list(dataset.train)
    with tqdm(total=len(items), desc="encoding images", unit="img", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(items), encoder.batch_size):
            batch, loaded = items[start : start + encoder.batch_size], []
            for item in batch:
                try:
                    loaded.append((item, tools.load(item.path)))
                except ImageInputError:
                    continue
            if loaded:
                vectors = encoder.encode_images([image.image for _, image in loaded])
                entries = [
                    NewEntry(name_of[item.label], "image", image.sha256, vector, source=item.path)
                    for (item, image), vector in zip(loaded, vectors)
                ]
                tools.add_entries(DATASET_MEMORY, entries)
            bar.update(len(batch))
