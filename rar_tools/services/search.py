"""Retrieval as an operation: check, load, embed every query of a call in one batch, search the
memory, and describe the result (candidates, category/parent levels, region, timings)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from rar_tools.components import Components
from rar_tools.errors import RegionError
from rar_tools.hierarchy import FineLabel
from rar_tools.images import LoadedImage
from rar_tools.limits import RetrievalMode
from rar_tools.region_recognition import Query, RegionOptions, encode_queries, region_query, whole_image_query
from rar_tools.regions import check_box
from rar_tools.requests import RetrieveRegionsRequest, RetrieveRequest
from rar_tools.schemas import Candidate, Levels, RegionInfo, RetrieveResult
from rar_tools.validation import check_confidence, check_k, check_memory_name

if TYPE_CHECKING:
    from rar_tools.retrieval import Retrieval, Retriever

BoxArg = Sequence[float]


@dataclass(frozen=True)
class Search:
    """What one search call asks: the memory, the image, its boxes (None: the whole image), k, the
    retrieval mode, the region options and the confidence wanted of the levels' answer."""

    memory: str
    image: str
    boxes: Sequence[BoxArg] | None
    k: int
    mode: RetrievalMode
    options: RegionOptions
    min_confidence: float = 0.0


@dataclass(frozen=True)
class Searched:
    """A search's outcome: the image, its encoded queries, one retrieval per query, the stage seconds."""

    loaded: LoadedImage
    queries: list[Query]
    results: list[RetrieveResult]
    timings: dict[str, float]


class SearchService:
    """The k best distinct labels for images, regions or embeddings."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self._retrievers: dict[int, Retriever] = {}

    @property
    def retriever(self) -> Retriever:
        """The retriever of the current store (a reopened store gets a fresh one)."""
        from rar_tools.retrieval import Retriever

        store = self.components.store
        if id(store) not in self._retrievers:
            self._retrievers = {id(store): Retriever(store)}
        return self._retrievers[id(store)]

    def retrieve(self, request: RetrieveRequest) -> RetrieveResult:
        """The k best distinct labels for an image, or for the region `box` of it.

        A region is seen as RAR's blurred crop, plus `views - 1` DynRefer context views whose scores
        are fused; `mode="auto"` searches a region by label text when the memory has any (crops are
        weak image-to-image queries). `car_filter` then drops labels CaR's prompted views reject.
        """
        options = RegionOptions(request.box_normalized, request.views, request.car_filter)
        boxes = None if request.box is None else [request.box]
        searched = self.search(
            Search(request.memory, request.image, boxes, request.k, request.mode, options, request.min_confidence)
        )
        first = searched.results[0]
        return first.model_copy(update={"timings": {**searched.timings, **first.timings}})

    def retrieve_regions(self, request: RetrieveRegionsRequest) -> list[RetrieveResult]:
        """`retrieve` for many boxes of one image, their CLIP views embedded in one batch; no ranking."""
        options = RegionOptions(request.box_normalized, request.views, request.car_filter)
        search = Search(
            request.memory, request.image, request.boxes, request.k, request.mode, options, request.min_confidence
        )
        return self.search(search).results

    def retrieve_embedding(
        self, memory: str, embedding: np.ndarray, k: int = 5, mode: RetrievalMode = "auto"
    ) -> RetrieveResult:
        """The k best distinct labels for a whole-image embedding made by the loaded encoder, so that one
        encoding can serve several memories."""
        self.check(memory, k, 0.0)
        query = Query(box=None, views=(), steps=(0.0,), weights=(1.0,), embeddings=embedding[None])
        return self.retrieve_queries(memory, [query], k, mode, car=False, min_confidence=0.0)[0]

    def check(self, memory: str, k: int, min_confidence: float) -> None:
        """Argument checks that need no model, before any model work (an unknown memory too)."""
        check_memory_name(memory)
        check_k(k)
        check_confidence(min_confidence)
        self.components.store.require(memory)

    def search(self, search: Search, before_work: Callable[[], object] | None = None) -> Searched:
        """Check, load, embed every query in one batch and search. `before_work` runs after the cheap
        checks (e.g. to get the ranker, so that a missing ranker fails before any work). The timings
        are the seconds spent loading, encoding and searching (model waits excluded)."""
        self.check(search.memory, search.k, search.min_confidence)
        if before_work is not None:
            before_work()
        encoder = self.components.encoder  # waited for outside the timings
        started = time.perf_counter()
        loaded, queries = self.queries(search.image, search.boxes, search.options)
        loaded_at = time.perf_counter()
        queries = encode_queries(encoder, queries)
        encoded_at = time.perf_counter()
        results = self.retrieve_queries(
            search.memory, queries, search.k, search.mode, search.options.car_filter, search.min_confidence
        )
        timings = {
            "load_s": loaded_at - started,
            "encode_s": encoded_at - loaded_at,
            "search_s": time.perf_counter() - encoded_at,
        }
        return Searched(loaded, queries, results, timings)

    def queries(
        self, image: str, boxes: Sequence[BoxArg] | None, options: RegionOptions
    ) -> tuple[LoadedImage, list[Query]]:
        """The image and what CLIP should see of it: the whole image, or each box's views."""
        if boxes is None:
            if options.views != 1 or options.car_filter:
                raise RegionError("views > 1 and car_filter work on a region: give a box")
            loaded = self.components.load(image)
            return loaded, [whole_image_query(loaded.image)]
        loaded = self.components.load(image, full_resolution=True)
        size, min_side = loaded.image.size, self.components.settings.min_box_side
        regions = [check_box(box, size, options.box_normalized, min_side) for box in boxes]
        config = self.components.view_config
        return loaded, [region_query(loaded.image, r, options.views, options.car_filter, config) for r in regions]

    def retrieve_queries(
        self,
        memory: str,
        queries: Sequence[Query],
        k: int,
        mode: RetrievalMode,
        car: bool,
        min_confidence: float,
    ) -> list[RetrieveResult]:
        """Retrieval for encoded queries; with `car`, CaR's filter, label texts encoded once for all."""
        from rar_tools.region_recognition import filter_retrievals
        from rar_tools.retrieval import searchable_kinds

        encoder, retriever = self.components.encoder, self.retriever
        how = self.components.settings.label_score
        region_search = retriever.region_mode(memory, mode) if any(q.box is not None for q in queries) else mode
        held = self.components.store.kinds(memory)
        kinds = {m: searchable_kinds(held, m) for m in {mode, region_search}}
        found, seconds = [], []
        for query in queries:
            started = time.perf_counter()
            searched = region_search if query.box is not None else mode
            found.append(
                retriever.retrieve_fused(
                    memory, encoder.identity, query.embeddings, query.weights, k, searched, how, kinds[searched]
                )
            )
            seconds.append({"search_s": time.perf_counter() - started})
        filtering: list[tuple[list[str], int]] = [([], 0)] * len(queries)
        if car:
            started = time.perf_counter()
            found, filtering = filter_retrievals(encoder, queries, found, self.components.settings.car_threshold)
            for timing in seconds:
                timing["filter_s"] = (time.perf_counter() - started) / len(queries)
        return [
            retrieve_result(memory, mode, k, q, f, dropped, rounds, timing, min_confidence)
            for q, f, (dropped, rounds), timing in zip(queries, found, filtering, seconds)
        ]


def retrieve_result(
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
    """The result model of one query's retrieval."""
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
        levels=Levels.of(fine, min_confidence),
        region=region,
        timings=timings,
    )
