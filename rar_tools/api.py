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

import numpy as np
from PIL import Image

from rar_tools.detection import Detector, check_queries
from rar_tools.encoder import ClipEncoder, EncoderIdentity, create_encoder
from rar_tools.errors import DetectorError, ImageInputError, MemoryStoreError, RankerError, RarToolsError, RegionError
from rar_tools.hierarchy import FineLabel, describe_levels
from rar_tools.images import ImageLimits, LoadedImage, load_image, pixels_sha256
from rar_tools.lazy import BackgroundModel
from rar_tools.locking import DataDirLock, lock_data_dir, unlock_data_dir
from rar_tools.memory import ExemplarImage, MemoryStore, NewEntry, check_memory_name, entry_id, open_http_client
from rar_tools.memory.files import thumbnail_jpeg
from rar_tools.ranking import Ranker, RankerConfig, RankMode, RankRequest, create_ranker
from rar_tools.ranking.prompts import MAX_CANDIDATES, MAX_EXEMPLAR_IMAGES, MIN_CANDIDATES
from rar_tools.region_recognition import (
    Query,
    RankerView,
    RegionOptions,
    ViewConfig,
    encode_queries,
    filter_retrievals,
    ranker_images,
    region_query,
    whole_image_query,
)
from rar_tools.regions import check_box, rar_crop
from rar_tools.retrieval import Retrieval, RetrievalMode, Retriever, region_mode, searchable_kinds
from rar_tools.schemas import (
    AddResult,
    Candidate,
    DetectResult,
    EncoderInfo,
    MemoryInfo,
    MemoryList,
    RankedCandidate,
    RankOutput,
    RecognizeResult,
    RegionInfo,
    RegionsResult,
    RemoveResult,
    RetrieveResult,
    SkippedInput,
)
from rar_tools.schemas import Detection as DetectionOut
from rar_tools.settings import Settings

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int], None]
MAX_LABEL_CHARS = 200
MAX_IDS_REPORTED = 1000
MAX_BOXES = 100
RANKER_REGION_SIDE = 448  # side of the region image the ranker sees (it may reduce it further)
BoxArg = Sequence[float]
KEEP_DECODED_PIXELS = 100_000_000  # about 300 MB of RGB


def check_label(label: str, what: str = "label", error: type[RarToolsError] = MemoryStoreError) -> str:
    """A label: 1-200 printable characters, surrounding and repeated whitespace collapsed."""
    if not isinstance(label, str):
        raise error(f"{what} must be a string")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in label):
        raise error(f"{what} {label[:60]!r} contains control characters")
    if any(unicodedata.category(ch) == "Cs" for ch in label):
        raise error(f"{what} {label[:60]!r} contains lone surrogates, which are not text")
    cleaned = " ".join(label.split())
    if not cleaned:
        raise error(f"{what} is empty")
    if len(cleaned) > MAX_LABEL_CHARS:
        raise error(f"{what} {cleaned[:40]!r}... has {len(cleaned)} characters; the limit is {MAX_LABEL_CHARS}")
    return cleaned


def optional_label(value: str | None, what: str) -> str | None:
    return None if value is None or not value.strip() else check_label(value, what)


class RarTools:
    """Encoder, memory store and ranker, created from one `Settings`. Safe to call from many
    threads at once: each model runs one call at a time, and the store serialises its writes."""

    def __init__(self, settings: Settings | None = None, *, store: MemoryStore | None = None) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.limits = ImageLimits(
            max_bytes=s.max_image_bytes,
            max_pixels=s.max_image_pixels,
            allowed_dirs=tuple(s.allow_dir),
            allow_urls=s.allow_urls,
            url_timeout_s=s.url_timeout,
        )
        self._store = store
        self._retriever: Retriever | None = None
        self._store_lock = threading.Lock()
        self._claim: DataDirLock | None = None
        self.clip = BackgroundModel("CLIP encoder", self._load_encoder)
        self.mllm = BackgroundModel("MLLM ranker", self._load_ranker)
        self.detector = BackgroundModel("object detector", self._load_detector)  # on first use only
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

    def _load_detector(self) -> Detector:
        return Detector(self.settings.detector_model, self.settings.device)

    @property
    def view_config(self) -> ViewConfig:
        s = self.settings
        return ViewConfig(s.region_side, s.region_context, s.region_blur, s.tight_view_weight)

    @property
    def ranker(self) -> Ranker:
        if self.settings.no_ranker:
            raise RankerError(
                "no ranker: this server was started with --no-ranker. Ranking needs an MLLM: restart "
                "without --no-ranker (--ranker-model ID_OR_FOLDER, or --ranker-url URL)"
            )
        return self.mllm.get(self.settings.model_wait_timeout)

    def ensure_ranker(self) -> Ranker:
        """The ranker, waited for: callers use it to fail before any image work when there is none."""
        return self.ranker

    @property
    def store(self) -> MemoryStore:
        """The memory store, opened (and its data folder locked) on first use."""
        with self._store_lock:  # opened once, also when a background thread asks first
            if self._store is None:
                s = self.settings
                client = open_http_client(s.chroma_url, s.chroma_database) if s.chroma_url else None
                self._store = MemoryStore(s.data_dir, client)
            return self._store

    @property
    def retriever(self) -> Retriever:
        """Label retrieval from the store, remembering the search widths memories needed."""
        store = self.store
        with self._store_lock:
            if self._retriever is None or self._retriever.store is not store:
                self._retriever = Retriever(store)
            return self._retriever

    def claim_data_dir(self) -> None:
        """Lock the data folder for this process now, without opening the store: a server does
        this at start, so a second server on the same folder is refused at once."""
        if self._claim is None:
            self._claim = lock_data_dir(self.settings.data_dir)

    def close(self) -> None:
        """Close the store and release the data folder (models stay loaded)."""
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        if self._claim is not None:
            unlock_data_dir(self._claim)
            self._claim = None

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
    def load(self, source: str, full_resolution: bool = False) -> LoadedImage:
        """Decode an image argument and, unless `full_resolution` (boxes are in its pixels), bound its
        size to the stored-exemplar side."""
        loaded = load_image(source, self.limits)
        side = self.settings.stored_image_side
        if not full_resolution and max(loaded.image.size) > side:
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
        *,
        box: BoxArg | None = None,
        box_normalized: bool = False,
    ) -> AddResult:
        """Store labelled exemplar images. Unless `skip_unreadable`, every image is checked first
        and one bad image stores nothing. With `box`, each image's region (RAR's blurred crop, the
        view a region query is compared with) is stored instead, identified by its pixels."""
        check_memory_name(memory)
        label = check_label(label)
        category, parent = optional_label(category, "category"), optional_label(parent, "parent")
        if not images:
            raise ImageInputError("no images given")
        checked = {} if skip_unreadable else self._load_all(images, box, box_normalized)
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
                    loaded.append(checked.pop(index, None) or self._load_exemplar(source, box, box_normalized))
                except ImageInputError as exc:
                    if not skip_unreadable:
                        raise
                    skipped.append(SkippedInput(source=str(source), reason=str(exc)))
            if loaded:
                embeddings = encoder.encode_images([item.image for item in loaded])
                exemplars = [
                    ExemplarImage(item.image, item.sha256, item.source_path, embedding)
                    for item, embedding in zip(loaded, embeddings)
                ]
                side = self.settings.stored_image_side
                outcome = self.store.add_images(memory, encoder.identity, exemplars, label, category, parent, side)
                added += len(outcome.added)
                present += len(outcome.already_present)
                ids += outcome.added + outcome.already_present
            if progress:
                progress(min(start + step, len(images)), len(images))
        return self._add_result(memory, "image", added, present, ids, skipped)

    def _load_exemplar(self, source: str, box: BoxArg | None, box_normalized: bool) -> LoadedImage:
        """The image to store: the image itself, or its region's crop."""
        if box is None:
            return self.load(source)
        loaded = self.load(source, full_resolution=True)
        region = check_box(box, loaded.image.size, box_normalized, self.settings.min_box_side)
        config = self.view_config
        crop = rar_crop(loaded.image, region, config.side, config.margin, config.blur_radius)
        return LoadedImage(crop, pixels_sha256(crop), loaded.source_path)

    def _load_all(
        self, images: Sequence[str], box: BoxArg | None = None, box_normalized: bool = False
    ) -> dict[int, LoadedImage]:
        """Load every image first, so that one bad image stores nothing; the decoded images are
        kept for the add (by position) while they fit in KEEP_DECODED_PIXELS, not decoded twice."""
        kept: dict[int, LoadedImage] = {}
        pixels = 0
        for index, source in enumerate(images):
            loaded = self._load_exemplar(source, box, box_normalized)
            pixels += loaded.image.width * loaded.image.height
            if pixels <= KEEP_DECODED_PIXELS:
                kept[index] = loaded
        return kept

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

    def add_entries(self, memory: str, entries: Sequence[NewEntry]) -> AddResult:
        """Store entries already embedded by this object's encoder (all of one kind), e.g. when the
        caller encodes images once and reuses the embeddings for several memories."""
        check_memory_name(memory)
        kinds = {entry.kind for entry in entries}
        if len(kinds) != 1:
            raise MemoryStoreError("give at least one entry, all of one kind (image or text)")
        outcome = self.store.add(memory, self.encoder.identity, entries)
        ids = outcome.added + outcome.already_present
        return self._add_result(memory, kinds.pop(), len(outcome.added), len(outcome.already_present), ids, [])

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

    # -- queries -----------------------------------------------------------------------------
    def _queries(
        self, image: str, boxes: Sequence[BoxArg] | None, options: RegionOptions
    ) -> tuple[LoadedImage, list[Query]]:
        """The image and what CLIP should see of it: the whole image, or each box's views."""
        if boxes is None:
            if options.views != 1 or options.car_filter:
                raise RegionError("views > 1 and car_filter work on a region: give a box")
            loaded = self.load(image)
            return loaded, [whole_image_query(loaded.image)]
        loaded = self.load(image, full_resolution=True)
        size, min_side = loaded.image.size, self.settings.min_box_side
        regions = [check_box(box, size, options.box_normalized, min_side) for box in boxes]
        config = self.view_config
        return loaded, [region_query(loaded.image, r, options.views, options.car_filter, config) for r in regions]

    def _check_search(self, memory: str, k: int, min_confidence: float) -> None:
        """Argument checks that need no model, before any model work."""
        check_memory_name(memory)
        check_k(k)
        check_confidence(min_confidence)
        self.store.require(memory)  # unknown memory: a clear error before any model work

    # -- retrieval ---------------------------------------------------------------------------
    def retrieve(
        self,
        memory: str,
        image: str,
        k: int = 5,
        mode: RetrievalMode = "auto",
        *,
        box: BoxArg | None = None,
        box_normalized: bool = False,
        views: int = 1,
        car_filter: bool = False,
        min_confidence: float = 0.0,
    ) -> RetrieveResult:
        """The k best distinct labels for an image, or for the region `box` of it.

        A region is seen as RAR's blurred crop, plus `views - 1` DynRefer context views whose scores
        are fused; `mode="auto"` searches a region by label text when the memory has any (crops are
        weak image-to-image queries). `car_filter` then drops labels CaR's prompted views reject.
        """
        options = RegionOptions(box_normalized=box_normalized, views=views, car_filter=car_filter)
        _, _, results, stages = self._search(
            memory, image, None if box is None else [box], k, mode, options, min_confidence
        )
        return results[0].model_copy(update={"timings": {**stages, **results[0].timings}})

    def retrieve_regions(
        self,
        memory: str,
        image: str,
        boxes: Sequence[BoxArg],
        k: int = 5,
        mode: RetrievalMode = "auto",
        *,
        box_normalized: bool = False,
        views: int = 1,
        car_filter: bool = False,
        min_confidence: float = 0.0,
    ) -> list[RetrieveResult]:
        """`retrieve` for many boxes of one image, their CLIP views embedded in one batch; no ranking."""
        check_boxes(boxes)
        options = RegionOptions(box_normalized=box_normalized, views=views, car_filter=car_filter)
        return self._search(memory, image, boxes, k, mode, options, min_confidence)[2]

    def _search(
        self,
        memory: str,
        image: str,
        boxes: Sequence[BoxArg] | None,
        k: int,
        mode: RetrievalMode,
        options: RegionOptions,
        min_confidence: float,
        before_work: Callable[[], object] | None = None,
    ) -> tuple[LoadedImage, list[Query], list[RetrieveResult], dict[str, float]]:
        """Check, load, embed every query in one batch and search: the image, its queries, one
        retrieval per query, and the seconds spent loading, encoding and searching (model waits
        excluded). `before_work` runs after the cheap checks (e.g. to get the ranker, so that a
        missing ranker fails before any work)."""
        self._check_search(memory, k, min_confidence)
        if before_work is not None:
            before_work()
        self.clip.get(self.settings.model_wait_timeout)  # wait outside the timings
        started = time.perf_counter()
        loaded, queries = self._queries(image, boxes, options)
        loaded_at = time.perf_counter()
        queries = encode_queries(self.encoder, queries)
        encoded_at = time.perf_counter()
        retrievals = self._retrieve_queries(memory, queries, k, mode, options.car_filter, min_confidence)
        stages = {
            "load_s": loaded_at - started,
            "encode_s": encoded_at - loaded_at,
            "search_s": time.perf_counter() - encoded_at,
        }
        return loaded, queries, retrievals, stages

    def _retrieve_queries(
        self,
        memory: str,
        queries: Sequence[Query],
        k: int,
        mode: RetrievalMode,
        car: bool,
        min_confidence: float,
    ) -> list[RetrieveResult]:
        """Retrieval for encoded queries; with `car`, CaR's filter, label texts encoded once for all."""
        identity, how = self.encoder.identity, self.settings.label_score
        region_search = region_mode(self.store, memory, mode) if any(q.box is not None for q in queries) else mode
        held = self.store.kinds(memory)
        kinds = {m: searchable_kinds(held, m) for m in {mode, region_search}}
        found, seconds = [], []
        for query in queries:
            started = time.perf_counter()
            searched = region_search if query.box is not None else mode
            found.append(
                self.retriever.retrieve_fused(
                    memory, identity, query.embeddings, query.weights, k, searched, how, kinds[searched]
                )
            )
            seconds.append({"search_s": time.perf_counter() - started})
        filtering: list[tuple[list[str], int]] = [([], 0)] * len(queries)
        if car:
            started = time.perf_counter()
            found, filtering = filter_retrievals(self.encoder, queries, found, self.settings.car_threshold)
            for timing in seconds:
                timing["filter_s"] = (time.perf_counter() - started) / len(queries)
        return [
            self._retrieve_result(memory, mode, k, q, f, dropped, rounds, timing, min_confidence)
            for q, f, (dropped, rounds), timing in zip(queries, found, filtering, seconds)
        ]

    def _retrieve_result(
        self,
        memory: str,
        mode: RetrievalMode,
        k: int,
        query: Query,
        found: Retrieval,
        dropped: list[str],
        rounds: int,
        timings: dict[str, float],
        min_confidence: float,
    ) -> RetrieveResult:
        region = None
        if query.box is not None:
            region = RegionInfo(
                box=query.box.as_list(),
                view_steps=list(query.steps),
                view_weights=list(query.weights),
                filtered_out=dropped,
                filter_rounds=rounds,
            )
        fine = [FineLabel(c.label, c.probability, c.category, c.parent) for c in found.candidates]
        return RetrieveResult(
            memory=memory,
            mode=mode,
            kinds_searched=found.kinds,
            k=k,
            note=found.note,
            candidates=[Candidate(**{**asdict(c), "entry_ids": c.entry_ids[:10]}) for c in found.candidates],
            levels=describe_levels(fine, min_confidence),
            region=region,
            timings=timings,
        )

    def retrieve_embedding(
        self, memory: str, embedding: np.ndarray, k: int = 5, mode: RetrievalMode = "auto"
    ) -> RetrieveResult:
        """The k best distinct labels for a whole-image embedding made by this object's encoder, so
        that one encoding can serve several memories."""
        self._check_search(memory, k, 0.0)
        query = Query(box=None, views=(), steps=(0.0,), weights=(1.0,), embeddings=embedding[None])
        return self._retrieve_queries(memory, [query], k, mode, car=False, min_confidence=0.0)[0]

    def exemplar_thumbnails(
        self, memory: str, candidates: Sequence[Candidate], max_side: int = 128, max_total_bytes: int = 400_000
    ) -> list[tuple[str, str, bytes]]:
        """(label, entry id, JPEG bytes) of each candidate's best stored exemplar, small and capped in total."""
        thumbs: list[tuple[str, str, bytes]] = []
        total = 0
        for candidate in candidates:
            found = self.store.entries(memory, candidate.entry_ids)
            best = next((i for i in candidate.entry_ids if i in found and found[i].image_path), None)
            if best is None:
                continue
            data = thumbnail_jpeg(found[best].image_path, max_side)
            if total + len(data) > max_total_bytes:
                break
            thumbs.append((candidate.label, best, data))
            total += len(data)
        return thumbs

    def exemplar_file(self, memory: str, entry: str) -> Path:
        """The stored image file of one exemplar entry."""
        return self.store.exemplar_path(memory, entry)

    # -- ranking -----------------------------------------------------------------------------
    def rank(
        self,
        image: str,
        candidates: Sequence[str],
        mode: RankMode = "score",
        memory: str | None = None,
        exemplars: bool = False,
        icl: bool = False,
        *,
        box: BoxArg | None = None,
        box_normalized: bool = False,
        ranker_view: RankerView = "crop",
        ranker_context: bool = False,
    ) -> RankOutput:
        """Order candidate labels for an image, or for its region `box`, with the MLLM, best first.

        With `exemplars`, each candidate's best-matching stored exemplar image from `memory` is
        shown next to its name (at most 8), so labels the MLLM never learned can still be ranked.
        A region is shown as its blurred crop (`ranker_view="crop"`) or with a red ellipse around it
        (`"prompt"`); `ranker_context` adds the whole image, the region marked, as a second image.
        """
        names = check_candidates(candidates)
        options = RegionOptions(box_normalized=box_normalized, ranker_view=ranker_view, ranker_context=ranker_context)
        if exemplars and memory is None:
            raise RankerError("exemplars=True needs `memory`: the memory whose exemplar images to show")
        if memory is not None:
            check_memory_name(memory)
            self.store.require(memory)
        ranker = self.ranker
        if box is None:
            shown, context = self.load(image).image, None
        else:
            loaded = self.load(image, full_resolution=True)
            region = check_box(box, loaded.image.size, box_normalized, self.settings.min_box_side)
            shown, context = self._ranker_view(loaded.image, region, options)
        return self._rank_image(ranker, shown, names, mode, memory if exemplars else None, icl, context)

    def rank_loaded(
        self,
        loaded: LoadedImage,
        names: Sequence[str],
        mode: RankMode = "score",
        exemplar_memory: str | None = None,
        icl: bool = False,
    ) -> RankOutput:
        """Rank already checked candidate names for a decoded whole image (see `rank`)."""
        return self._rank_image(self.ranker, loaded.image, list(names), mode, exemplar_memory, icl)

    def _ranker_view(self, image: Image.Image, region, options: RegionOptions):
        """What the ranker sees of a region (see `region_recognition.ranker_images`)."""
        return ranker_images(
            image, region, options.ranker_view, options.ranker_context, self.view_config, RANKER_REGION_SIDE
        )

    def _rank_image(
        self,
        ranker: Ranker,
        image: Image.Image,
        names: list[str],
        mode: RankMode,
        exemplar_memory: str | None,
        icl: bool,
        context: Image.Image | None = None,
        query_embedding: np.ndarray | None = None,
    ) -> RankOutput:
        """Rank `names` for `image`; exemplars are looked up by `query_embedding` (default: `image`'s)."""
        shown = None
        if exemplar_memory:
            if query_embedding is None:
                query_embedding = self.encoder.encode_images([image])[0]
            shown = self._exemplars(exemplar_memory, query_embedding, names)
        result = ranker.rank(
            RankRequest(image=image, candidates=tuple(names), mode=mode, icl=icl, exemplars=shown, context=context)
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

    def _exemplars(self, memory: str, embedding: np.ndarray, names: list[str]) -> tuple[Image.Image | None, ...]:
        """Per candidate, the stored exemplar image of that label most similar to the query."""
        identity = self.encoder.identity
        shown: list[Image.Image | None] = []
        for name in names:
            path = None
            if sum(im is not None for im in shown) < MAX_EXEMPLAR_IMAGES:
                path = self.store.best_exemplar_file(memory, identity, embedding, name)
            shown.append(open_exemplar(path) if path else None)
        return tuple(shown)

    # -- recognition ---------------------------------------------------------------------------
    def recognize(
        self,
        memory: str,
        image: str,
        k: int = 5,
        mode: RankMode = "score",
        retrieval_mode: RetrievalMode = "auto",
        exemplars: bool = False,
        icl: bool = False,
        *,
        box: BoxArg | None = None,
        box_normalized: bool = False,
        views: int = 1,
        car_filter: bool = False,
        ranker_view: RankerView = "crop",
        ranker_context: bool = False,
        min_confidence: float = 0.0,
        progress: ProgressFn | None = None,
    ) -> RecognizeResult:
        """Retrieve k candidates from `memory`, then rank them with the MLLM: RAR in one call, for
        the image or for its region `box` (see `retrieve` and `rank` for the region options).
        `progress(done, total)` is told after retrieval and after ranking."""
        options = RegionOptions(box_normalized, views, car_filter, ranker_view, ranker_context)
        boxes = None if box is None else [box]
        _, results, timings = self._recognize(
            memory, image, boxes, k, mode, retrieval_mode, exemplars, icl, options, min_confidence, progress
        )
        result = results[0]
        stages = {"load_s": timings["load_s"], "encode_s": timings["encode_s"]}
        retrieval = result.retrieval.model_copy(update={"timings": {**stages, **result.retrieval.timings}})
        overall = {
            "retrieve_s": sum(retrieval.timings.values()),
            "rank_s": result.timings["rank_s"],
            "total_s": timings["total_s"],
        }
        return result.model_copy(update={"retrieval": retrieval, "timings": overall})

    def recognize_regions(
        self,
        memory: str,
        image: str,
        boxes: Sequence[BoxArg],
        k: int = 5,
        mode: RankMode = "score",
        retrieval_mode: RetrievalMode = "auto",
        exemplars: bool = False,
        icl: bool = False,
        *,
        box_normalized: bool = False,
        views: int = 1,
        car_filter: bool = False,
        ranker_view: RankerView = "crop",
        ranker_context: bool = False,
        min_confidence: float = 0.0,
        progress: ProgressFn | None = None,
    ) -> RegionsResult:
        """Recognise many boxes of one image: the CLIP views of all boxes are embedded in one batch,
        then each box is retrieved and ranked as `recognize` does for one. `progress(done, total)`
        is told after retrieval and after each box's ranking."""
        check_boxes(boxes)
        options = RegionOptions(box_normalized, views, car_filter, ranker_view, ranker_context)
        loaded, results, timings = self._recognize(
            memory, image, boxes, k, mode, retrieval_mode, exemplars, icl, options, min_confidence, progress
        )
        return RegionsResult(memory=memory, image_size=list(loaded.image.size), regions=results, timings=timings)

    def _recognize(
        self,
        memory: str,
        image: str,
        boxes: Sequence[BoxArg] | None,
        k: int,
        mode: RankMode,
        retrieval_mode: RetrievalMode,
        exemplars: bool,
        icl: bool,
        options: RegionOptions,
        min_confidence: float,
        progress: ProgressFn | None = None,
    ) -> tuple[LoadedImage, list[RecognizeResult], dict[str, float]]:
        loaded, queries, retrievals, stages = self._search(
            memory, image, boxes, k, retrieval_mode, options, min_confidence, before_work=lambda: self.ranker
        )
        report = progress or (lambda done, total: None)
        report(1, len(queries) + 1)
        started = time.perf_counter()
        ranker, shown_from = self.ranker, memory if exemplars else None
        results = []
        for query, found in zip(queries, retrievals):
            results.append(
                self._rank_query(ranker, loaded.image, query, found, mode, shown_from, icl, options, min_confidence)
            )
            report(len(results) + 1, len(queries) + 1)
        rank_s = time.perf_counter() - started
        return loaded, results, {**stages, "rank_s": rank_s, "total_s": sum(stages.values()) + rank_s}

    def _rank_query(
        self,
        ranker: Ranker,
        image: Image.Image,
        query: Query,
        retrieval: RetrieveResult,
        mode: RankMode,
        exemplar_memory: str | None,
        icl: bool,
        options: RegionOptions,
        min_confidence: float,
    ) -> RecognizeResult:
        """Rank one query's retrieved candidates (when there are at least two)."""
        started = time.perf_counter()
        names = [c.label for c in retrieval.candidates]
        ranking, note, levels = None, retrieval.note, retrieval.levels
        if len(names) >= MIN_CANDIDATES:
            shown, context = (image, None) if query.box is None else self._ranker_view(image, query.box, options)
            ranking = self._rank_image(ranker, shown, names, mode, exemplar_memory, icl, context, query.tight_embedding)
            label = ranking.best
            by_label = {c.label: c for c in retrieval.candidates}
            fine = [
                FineLabel(r.label, r.score, by_label[r.label].category, by_label[r.label].parent)
                for r in ranking.ranked
            ]
            levels = describe_levels(fine, min_confidence)
        else:
            label = names[0] if names else None
            note = (note + "; " if note else "") + "fewer than two candidates, so nothing was ranked"
        rank_s = time.perf_counter() - started
        return RecognizeResult(
            label=label,
            retrieval=retrieval,
            ranking=ranking,
            levels=levels,
            note=note,
            timings={"retrieve_s": sum(retrieval.timings.values()), "rank_s": rank_s},
        )

    # -- detection -----------------------------------------------------------------------------
    def detect(
        self, image: str, queries: Sequence[str], threshold: float | None = None, max_boxes: int = 50
    ) -> DetectResult:
        """Boxes for text `queries` from the open-vocabulary detector (loaded on first use), best
        first, in pixels of the image: each can be named with `recognize_regions`."""
        names = check_queries(queries)
        threshold = self.settings.detector_threshold if threshold is None else threshold
        if not 0.0 <= threshold <= 1.0:
            raise DetectorError(f"threshold must be from 0 to 1, got {threshold!r}")
        if not isinstance(max_boxes, int) or not 1 <= max_boxes <= MAX_BOXES:
            raise DetectorError(f"max_boxes must be an integer from 1 to {MAX_BOXES}, got {max_boxes!r}")
        detector = self.detector.get(self.settings.model_wait_timeout)
        started = time.perf_counter()
        loaded = self.load(image, full_resolution=True)
        loaded_at = time.perf_counter()
        found = detector.detect(loaded.image, names, threshold, max_boxes, min_side=self.settings.min_box_side)
        return DetectResult(
            detections=[DetectionOut(box=d.box.as_list(), score=d.score, query=d.query) for d in found],
            image_size=list(loaded.image.size),
            detector=detector.name,
            timings={"load_s": loaded_at - started, "detect_s": time.perf_counter() - loaded_at},
        )


def check_boxes(boxes: Sequence[BoxArg]) -> None:
    if not isinstance(boxes, (list, tuple)) or not 1 <= len(boxes) <= MAX_BOXES:
        raise RegionError(f"give a list of 1 to {MAX_BOXES} boxes, got {boxes!r:.80}")


def check_confidence(min_confidence: float) -> float:
    if not isinstance(min_confidence, (int, float)) or not 0.0 <= min_confidence <= 1.0:
        raise RegionError(f"min_confidence must be from 0 to 1, got {min_confidence!r}")
    return float(min_confidence)


def open_exemplar(path: Path) -> Image.Image | None:
    """A stored exemplar as RGB, or None if a concurrent removal deleted it meanwhile."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError:
        log.warning("stored exemplar %s vanished or is unreadable; shown without it", path.name)
        return None


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
