"""The Python API: one object owning the encoder, the memory store and the ranker.

    from rar_tools import RarTools, Settings
    tools = RarTools(Settings(clip_model="local-dir:/models/clip"))
    tools.add_images("birds", ["/photos/jay.jpg"], label="Blue Jay")
    print(tools.retrieve("birds", "/photos/query.jpg", k=5).candidates)

The MCP server and the CLI are thin layers over these methods.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from PIL import Image

from rar_tools.encoder import ClipEncoder, EncoderIdentity, create_encoder
from rar_tools.errors import ImageInputError, MemoryStoreError, RankerError, RarToolsError
from rar_tools.images import ImageLimits, LoadedImage, load_image, store_image, thumbnail_jpeg
from rar_tools.lazy import BackgroundModel
from rar_tools.memory import MemoryStore, NewEntry, check_memory_name, entry_id, open_http_client
from rar_tools.ranking import Ranker, RankerConfig, RankMode, RankRequest, create_ranker
from rar_tools.ranking.prompts import MAX_CANDIDATES, MIN_CANDIDATES
from rar_tools.retrieval import RetrievalMode, retrieve_labels
from rar_tools.schemas import (
    AddResult,
    Candidate,
    EncoderInfo,
    MemoryInfo,
    MemoryList,
    RankedCandidate,
    RankOutput,
    RecognizeResult,
    RemoveResult,
    RetrieveResult,
    SkippedInput,
)
from rar_tools.settings import Settings

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int], None]
MAX_LABEL_CHARS = 200
MAX_IDS_REPORTED = 1000
MAX_EXEMPLARS_SHOWN = 8
KEEP_DECODED_PIXELS = 100_000_000  # about 300 MB of RGB


def check_label(label: str, what: str = "label", error: type[RarToolsError] = MemoryStoreError) -> str:
    """A label: 1-200 printable characters, surrounding and repeated whitespace collapsed."""
    if not isinstance(label, str):
        raise error(f"{what} must be a string")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in label):
        raise error(f"{what} {label[:60]!r} contains control characters")
    cleaned = " ".join(label.split())
    if not cleaned:
        raise error(f"{what} is empty")
    if len(cleaned) > MAX_LABEL_CHARS:
        raise error(f"{what} {cleaned[:40]!r}... has {len(cleaned)} characters; the limit is {MAX_LABEL_CHARS}")
    return cleaned


def optional_label(value: str | None, what: str) -> str | None:
    return None if value is None or not value.strip() else check_label(value, what)


class RarTools:
    """Encoder, memory store and (later) ranker, created from one `Settings`."""

    def __init__(self, settings: Settings | None = None, *, store: MemoryStore | None = None) -> None:
        self.settings = settings or Settings()
        self.limits = ImageLimits(self.settings.max_image_bytes, self.settings.max_image_pixels)
        self._store = store
        self._store_lock = threading.Lock()
        self.clip = BackgroundModel("CLIP encoder", self._load_encoder)
        self.mllm = BackgroundModel("MLLM ranker", self._load_ranker)
        self.label_index = BackgroundModel("memory label index", self._read_labels)

    # -- components ----------------------------------------------------------------------------
    def _load_encoder(self) -> ClipEncoder:
        s = self.settings
        return create_encoder(s.clip_model, s.clip_pretrained, s.device, s.batch_size, s.templates, s.clip_precision)

    def _load_ranker(self) -> Ranker:
        s = self.settings
        return create_ranker(
            RankerConfig(
                model=s.ranker_model,
                device=s.device,
                max_new_tokens=s.ranker_max_new_tokens,
                max_image_side=s.ranker_image_side,
                url=s.ranker_url,
                api_model=s.ranker_api_model,
                api_key=s.ranker_api_key,
                timeout_s=s.ranker_timeout,
            )
        )

    @property
    def ranker(self) -> Ranker:
        if self.settings.no_ranker:
            raise RankerError(
                "no ranker: this server was started with --no-ranker. Ranking needs an MLLM: restart "
                "without --no-ranker (--ranker-model ID_OR_FOLDER, or --ranker-url URL)"
            )
        return self.mllm.get(self.settings.model_wait_timeout)

    @property
    def store(self) -> MemoryStore:
        with self._store_lock:  # opened once, also when a background thread asks first
            if self._store is None:
                s = self.settings
                client = open_http_client(s.chroma_url, s.chroma_database) if s.chroma_url else None
                self._store = MemoryStore(s.data_dir, client)
        return self._store

    @property
    def encoder(self) -> ClipEncoder:
        return self.clip.get(self.settings.model_wait_timeout)

    def _read_labels(self) -> int:
        """Read the labels of every memory's entries, so that searches need not (see `MemoryStore.read_labels`)."""
        return sum(self.store.read_labels(name) for name in self.store.names())

    def start_loading(self) -> None:
        """Load the models, and read the memories' labels, in background threads (the server calls
        this at start; nothing waits for the labels)."""
        self.clip.start()
        if not self.settings.no_ranker:
            self.mllm.start()
        self.label_index.start()

    # -- images ------------------------------------------------------------------------------
    def load(self, source: str) -> LoadedImage:
        """Decode an image argument and bound its size to the stored-exemplar side."""
        loaded = load_image(source, self.limits)
        side = self.settings.stored_image_side
        if max(loaded.image.size) > side:
            image = loaded.image.copy()
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            loaded = LoadedImage(image, loaded.sha256, loaded.source_path)
        return loaded

    # -- memory ------------------------------------------------------------------------------
    def add_images(
        self,
        memory: str,
        images: Sequence[str],
        label: str,
        category: str | None = None,
        parent: str | None = None,
        skip_unreadable: bool = False,
        progress: ProgressFn | None = None,
    ) -> AddResult:
        """Store labelled exemplar images. Unless `skip_unreadable`, every image is checked first
        and one bad image stores nothing."""
        check_memory_name(memory)
        label = check_label(label)
        category, parent = optional_label(category, "category"), optional_label(parent, "parent")
        if not images:
            raise ImageInputError("no images given")
        checked = {} if skip_unreadable else self._load_all(images)
        encoder = self.encoder
        ids: list[str] = []
        added = present = 0
        skipped: list[SkippedInput] = []
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            loaded = []
            for index in range(start, min(start + step, len(images))):
                source = images[index]
                try:
                    loaded.append(checked.pop(index, None) or self.load(source))
                except ImageInputError as exc:
                    if not skip_unreadable:
                        raise
                    skipped.append(SkippedInput(source=str(source), reason=str(exc)))
            if loaded:
                outcome = self.store.add(
                    memory, encoder.identity, self._image_entries(encoder, loaded, label, category, parent)
                )
                added += len(outcome.added)
                present += len(outcome.already_present)
                ids += outcome.added + outcome.already_present
            if progress:
                progress(min(start + step, len(images)), len(images))
        return self._add_result(memory, "image", added, present, ids, skipped)

    def _load_all(self, images: Sequence[str]) -> dict[int, LoadedImage]:
        """Load every image first, so that one bad image stores nothing; the decoded images are
        kept for the add (by position) while they fit in KEEP_DECODED_PIXELS, not decoded twice."""
        kept: dict[int, LoadedImage] = {}
        pixels = 0
        for index, source in enumerate(images):
            loaded = self.load(source)
            pixels += loaded.image.width * loaded.image.height
            if pixels <= KEEP_DECODED_PIXELS:
                kept[index] = loaded
        return kept

    def _image_entries(
        self, encoder: ClipEncoder, loaded: list[LoadedImage], label: str, category: str | None, parent: str | None
    ) -> list[NewEntry]:
        """Embed a batch and write its exemplar files (before any entry can point at them)."""
        embeddings = encoder.encode_images([item.image for item in loaded])
        entries = []
        for item, embedding in zip(loaded, embeddings):
            path = store_image(self.store.images_dir, item, self.settings.stored_image_side)
            entries.append(
                NewEntry(
                    label=label,
                    kind="image",
                    sha256=item.sha256,
                    embedding=embedding,
                    source=item.source_path,
                    image_file=str(path.relative_to(self.store.data_dir)),
                    category=category,
                    parent=parent,
                )
            )
        return entries

    def add_labels(
        self,
        memory: str,
        labels: Sequence[str],
        category: str | None = None,
        parent: str | None = None,
        hierarchy: Sequence[tuple[str | None, str | None]] | None = None,
    ) -> AddResult:
        """Store label texts (zero-shot entries). `hierarchy`, if given, holds a (category, parent)
        pair per label and overrides `category`/`parent`."""
        check_memory_name(memory)
        if not labels:
            raise MemoryStoreError("no labels given")
        cleaned = [check_label(label) for label in labels]
        levels = hierarchy or [(category, parent)] * len(cleaned)
        levels = [(optional_label(c, "category"), optional_label(p, "parent")) for c, p in levels]
        encoder = self.encoder
        embeddings = encoder.encode_labels(cleaned)
        entries = [
            NewEntry(
                label=label,
                kind="text",
                sha256=text_sha(label, encoder.templates),
                embedding=embedding,
                category=c,
                parent=p,
            )
            for label, embedding, (c, p) in zip(cleaned, embeddings, levels)
        ]
        outcome = self.store.add(memory, encoder.identity, entries)
        return self._add_result(
            memory,
            "text",
            len(outcome.added),
            len(outcome.already_present),
            outcome.added + outcome.already_present,
            [],
        )

    def _add_result(
        self,
        memory: str,
        kind: Literal["image", "text"],
        added: int,
        present: int,
        ids: list[str],
        skipped: list[SkippedInput],
    ) -> AddResult:
        noun = "exemplar image" if kind == "image" else "label text"
        message = f"stored {added} new {noun}(s) in memory {memory!r}"
        if present:
            message += f"; {present} already present, not stored again"
        if skipped:
            message += f"; skipped {len(skipped)} unreadable input(s)"
        return AddResult(
            memory=memory,
            kind=kind,
            added=added,
            already_present=present,
            entry_ids=ids[:MAX_IDS_REPORTED],
            count=self.store.count(memory),
            skipped=skipped,
            message=message,
        )

    def remove(self, memory: str, entry_ids: Sequence[str] | None = None, label: str | None = None) -> RemoveResult:
        """Remove entries by id and/or every entry of a label."""
        if not entry_ids and label is None:
            raise MemoryStoreError("say what to remove: entry_ids, a label, or both")
        removed = self.store.remove(memory, entry_ids, label)
        return RemoveResult(memory=memory, removed=removed, count=self.store.count(memory))

    def list_memories(self, max_labels: int = 100) -> MemoryList:
        """Every memory with its counts per kind and per label, and its encoder."""
        infos = [self.describe_memory(name, max_labels) for name in self.store.names()]
        return MemoryList(data_dir=str(self.store.data_dir), memories=infos)

    def describe_memory(self, memory: str, max_labels: int = 100_000) -> MemoryInfo:
        """One memory's counts per kind and per label (most first), and its encoder."""
        summary = self.store.summary(check_memory_name(memory))
        labels = dict(list(summary.label_counts.items())[:max_labels])
        return MemoryInfo(
            name=memory,
            count=summary.count,
            kinds=summary.kind_counts,
            labels_total=len(summary.label_counts),
            labels=labels,
            labels_truncated=len(labels) < len(summary.label_counts),
            encoder=EncoderInfo(**asdict(summary.encoder)) if summary.encoder else None,
        )

    # -- retrieval ---------------------------------------------------------------------------
    def retrieve(self, memory: str, image: str, k: int = 5, mode: RetrievalMode = "auto") -> RetrieveResult:
        """The k best distinct labels for an image (see `retrieval.retrieve_labels`)."""
        check_memory_name(memory)
        check_k(k)
        self.store.collection(memory)  # unknown memory: a clear error before any model work
        self.clip.get(self.settings.model_wait_timeout)  # wait outside the timings
        started = time.perf_counter()
        loaded = self.load(image)
        result, timings = self._retrieve_loaded(memory, loaded, k, mode)
        return result.model_copy(
            update={"timings": {"load_s": time.perf_counter() - started - sum(timings.values()), **timings}}
        )

    def _retrieve_loaded(
        self, memory: str, loaded: LoadedImage, k: int, mode: RetrievalMode
    ) -> tuple[RetrieveResult, dict[str, float]]:
        encoder = self.encoder
        started = time.perf_counter()
        embedding = encoder.encode_images([loaded.image])[0]
        encoded_at = time.perf_counter()
        result = retrieve_labels(self.store, memory, encoder.identity, embedding, k, mode, self.settings.label_score)
        timings = {"encode_s": encoded_at - started, "search_s": time.perf_counter() - encoded_at}
        return RetrieveResult(
            memory=memory,
            mode=mode,
            kinds_searched=result.kinds,
            k=k,
            note=result.note,
            candidates=[Candidate(**{**asdict(c), "entry_ids": c.entry_ids[:10]}) for c in result.candidates],
            timings=timings,
        ), timings

    def exemplar_thumbnails(
        self, memory: str, candidates: Sequence[Candidate], max_side: int = 128, max_total_bytes: int = 400_000
    ) -> list[tuple[str, str, bytes]]:
        """(label, entry id, JPEG bytes) of each candidate's best stored exemplar, small and capped in total."""
        thumbs: list[tuple[str, str, bytes]] = []
        total = 0
        for candidate in candidates:
            found = self.store.entries(memory, candidate.entry_ids)
            best = next((i for i in candidate.entry_ids if found.get(i, {}).get("image_file")), None)
            if best is None:
                continue
            data = thumbnail_jpeg(self.store.data_dir / found[best]["image_file"], max_side)
            if total + len(data) > max_total_bytes:
                break
            thumbs.append((candidate.label, best, data))
            total += len(data)
        return thumbs

    def exemplar_file(self, memory: str, entry: str) -> Path:
        """The stored image file of one exemplar entry."""
        found = self.store.entries(memory, [entry])
        if entry not in found:
            raise MemoryStoreError(f"memory {memory!r} has no entry {entry!r}")
        if not found[entry].get("image_file"):
            raise MemoryStoreError(f"entry {entry!r} of memory {memory!r} is a label text, not an image")
        return self.store.data_dir / found[entry]["image_file"]

    # -- ranking -----------------------------------------------------------------------------
    def rank(
        self,
        image: str,
        candidates: Sequence[str],
        mode: RankMode = "score",
        memory: str | None = None,
        exemplars: bool = False,
        icl: bool = False,
    ) -> RankOutput:
        """Order candidate labels for an image with the MLLM, best first.

        With `exemplars`, each candidate's best-matching stored exemplar image from `memory` is
        shown next to its name (at most 8), so labels the MLLM never learned can still be ranked.
        """
        names = check_candidates(candidates)
        if exemplars and memory is None:
            raise RankerError("exemplars=True needs `memory`: the memory whose exemplar images to show")
        if memory is not None:
            check_memory_name(memory)
            self.store.collection(memory)
        ranker = self.ranker
        loaded = self.load(image)
        return self._rank_loaded(ranker, loaded, names, mode, memory if exemplars else None, icl)

    def _rank_loaded(
        self,
        ranker: Ranker,
        loaded: LoadedImage,
        names: list[str],
        mode: RankMode,
        exemplar_memory: str | None,
        icl: bool,
    ) -> RankOutput:
        shown = self._exemplars(exemplar_memory, loaded, names) if exemplar_memory else None
        result = ranker.rank(
            RankRequest(image=loaded.image, candidates=tuple(names), mode=mode, icl=icl, exemplars=shown)
        )
        return RankOutput(
            best=result.best,
            mode=result.mode,
            fallback=result.fallback,
            raw_text=result.raw_text,
            ranked=[RankedCandidate(label=r.label, score=r.score) for r in result.ranked],
            ranker=ranker.name,
            timings=result.timings,
            exemplars_shown=sum(im is not None for im in shown) if shown else 0,
        )

    def _exemplars(self, memory: str, loaded: LoadedImage, names: list[str]) -> tuple[Image.Image | None, ...]:
        """Per candidate, the stored exemplar image of that label most similar to the query."""
        encoder = self.encoder
        embedding = encoder.encode_images([loaded.image])[0]
        shown: list[Image.Image | None] = []
        for name in names:
            path = None
            if sum(im is not None for im in shown) < MAX_EXEMPLARS_SHOWN:
                path = self.store.best_exemplar_file(memory, encoder.identity, embedding, name)
            shown.append(Image.open(path).convert("RGB") if path else None)
        return tuple(shown)

    def recognize(
        self,
        memory: str,
        image: str,
        k: int = 5,
        mode: RankMode = "score",
        retrieval_mode: RetrievalMode = "auto",
        exemplars: bool = False,
        icl: bool = False,
        progress: ProgressFn | None = None,
    ) -> RecognizeResult:
        """Retrieve k candidates from `memory`, then rank them with the MLLM: RAR in one call."""
        check_memory_name(memory)
        check_k(k)
        self.store.collection(memory)
        ranker = self.ranker
        started = time.perf_counter()
        loaded = self.load(image)
        retrieval, _ = self._retrieve_loaded(memory, loaded, k, retrieval_mode)
        if progress:
            progress(1, 2)
        names = [c.label for c in retrieval.candidates]
        ranking, note = None, retrieval.note
        if len(names) >= MIN_CANDIDATES:
            ranking = self._rank_loaded(ranker, loaded, names, mode, memory if exemplars else None, icl)
            label = ranking.best
        else:
            label = names[0] if names else None
            note = (note + "; " if note else "") + "fewer than two candidates, so nothing was ranked"
        if progress:
            progress(2, 2)
        return RecognizeResult(
            label=label,
            retrieval=retrieval,
            ranking=ranking,
            note=note,
            timings={
                "retrieve_s": sum(retrieval.timings.values()),
                "rank_s": ranking.timings.get("total_s", 0.0) if ranking else 0.0,
                "total_s": time.perf_counter() - started,
            },
        )


def check_candidates(candidates: Sequence[str]) -> list[str]:
    """2-50 distinct, valid candidate labels."""
    if not isinstance(candidates, (list, tuple)) or not MIN_CANDIDATES <= len(candidates) <= MAX_CANDIDATES:
        count = len(candidates) if isinstance(candidates, (list, tuple)) else "no list of"
        raise RankerError(f"give {MIN_CANDIDATES} to {MAX_CANDIDATES} candidates to rank, got {count}")
    names = [check_label(c, "candidate", RankerError) for c in candidates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RankerError(f"duplicate candidates: {duplicates[:5]}; give each label once")
    return names


def check_k(k: int, limit: int = 50) -> int:
    if not isinstance(k, int) or not 1 <= k <= limit:
        raise MemoryStoreError(f"k must be an integer from 1 to {limit}, got {k!r}")
    return k


def text_sha(label: str, templates: str) -> str:
    import hashlib

    return hashlib.sha256(f"{templates}\x00{label}".encode()).hexdigest()


__all__ = ["RarTools", "check_label", "EncoderIdentity", "entry_id"]
