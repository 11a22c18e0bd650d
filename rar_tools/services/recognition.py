"""Ranking candidates with the MLLM, and RAR's whole loop: retrieve, then rank."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rar_tools.components import Components
from rar_tools.hierarchy import FineLabel
from rar_tools.images import LoadedImage
from rar_tools.limits import MAX_EXEMPLAR_IMAGES, MIN_CANDIDATES, RankMode
from rar_tools.region_recognition import Query, RegionOptions, ranker_images
from rar_tools.regions import Box, check_box
from rar_tools.requests import ProgressFn, RankCandidatesRequest, RecognizeRegionsRequest, RecognizeRequest
from rar_tools.schemas import Levels, RankedCandidate, RankOutput, RecognizeResult, RegionsResult, RetrieveResult
from rar_tools.services.description import DescriptionService
from rar_tools.services.search import Search, SearchService

if TYPE_CHECKING:
    from rar_tools.ranking import Ranker

RANKER_REGION_SIDE = 448  # side of the region image the ranker sees (it may reduce it further)


class RecognitionService:
    """The ranker over candidates (`rank`), and retrieval followed by ranking (`recognize`)."""

    def __init__(
        self, components: Components, search: SearchService, describing: DescriptionService | None = None
    ) -> None:
        self.components = components
        self.searching = search
        self.describing = describing or DescriptionService(components, search)

    # -- ranking -----------------------------------------------------------------------------------
    def rank(self, request: RankCandidatesRequest) -> RankOutput:
        """Order candidate labels for an image, or for its region `box`, with the MLLM, best first.

        With `exemplars`, each candidate's best-matching stored exemplar image from `memory` is shown
        next to its name (at most 8), so labels the MLLM never learned can still be ranked. A region is
        shown as its blurred crop (`ranker_view="crop"`) or with a red ellipse around it (`"prompt"`);
        `ranker_context` adds the whole image, the region marked, as a second image.
        """
        options = RegionOptions(
            request.box_normalized, ranker_view=request.ranker_view, ranker_context=request.ranker_context
        )
        if request.memory is not None:
            self.components.store.require(request.memory)
        ranker = self.components.ranker
        if request.box is None:
            shown, context = self.components.load(request.image).image, None
        else:
            loaded = self.components.load(request.image, full_resolution=True)
            region = check_box(
                request.box, loaded.image.size, request.box_normalized, self.components.settings.min_box_side
            )
            shown, context = self.ranker_view(loaded.image, region, options)
        exemplar_memory = request.memory if request.exemplars else None
        return self.rank_image(ranker, shown, request.candidates, request.mode, exemplar_memory, request.icl, context)

    def rank_loaded(
        self,
        loaded: LoadedImage,
        names: Sequence[str],
        mode: RankMode = "score",
        exemplar_memory: str | None = None,
        icl: bool = False,
    ) -> RankOutput:
        """Rank already checked candidate names for a decoded whole image (see `rank`)."""
        return self.rank_image(self.components.ranker, loaded.image, list(names), mode, exemplar_memory, icl)

    def ranker_view(self, image: Image.Image, region: Box, options: RegionOptions):
        """What the ranker sees of a region (see `region_recognition.ranker_images`)."""
        config = self.components.view_config
        return ranker_images(image, region, options.ranker_view, options.ranker_context, config, RANKER_REGION_SIDE)

    def rank_image(
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
        from rar_tools.ranking import RankRequest

        shown = None
        if exemplar_memory:
            if query_embedding is None:
                query_embedding = self.components.encoder.encode_images([image])[0]
            shown = self.exemplars(exemplar_memory, query_embedding, names)
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

    def exemplars(self, memory: str, embedding: np.ndarray, names: list[str]) -> tuple[Image.Image | None, ...]:
        """Per candidate, the stored exemplar image of that label most similar to the query."""
        identity, store = self.components.encoder.identity, self.components.store
        shown: list[Image.Image | None] = []
        for name in names:
            path = None
            if sum(im is not None for im in shown) < MAX_EXEMPLAR_IMAGES:
                path = store.best_exemplar_file(memory, identity, embedding, name)
            shown.append(open_exemplar(path) if path else None)
        return tuple(shown)

    # -- recognition -------------------------------------------------------------------------------
    def recognize(self, request: RecognizeRequest, progress: ProgressFn | None = None) -> RecognizeResult:
        """Retrieve k candidates from `memory`, then rank them with the MLLM: RAR in one call, for the
        image or for its region `box`. `progress(done, total)` is told after retrieval and after ranking."""
        boxes = None if request.box is None else [request.box]
        _, results, timings = self.recognize_all(request, boxes, progress)
        result = results[0]
        stages = {"load_s": timings["load_s"], "encode_s": timings["encode_s"]}
        retrieval = result.retrieval.model_copy(update={"timings": {**stages, **result.retrieval.timings}})
        overall = {
            "retrieve_s": sum(retrieval.timings.values()),
            "rank_s": result.timings["rank_s"],
            "total_s": timings["total_s"],
        }
        return result.model_copy(update={"retrieval": retrieval, "timings": overall})

    def recognize_regions(self, request: RecognizeRegionsRequest, progress: ProgressFn | None = None) -> RegionsResult:
        """Recognise many boxes of one image: the CLIP views of all boxes are embedded in one batch, then
        each box is retrieved and ranked as `recognize` does for one. `progress(done, total)` is told after
        retrieval and after each box's ranking."""
        loaded, results, timings = self.recognize_all(request, request.boxes, progress)
        return RegionsResult(
            memory=request.memory, image_size=list(loaded.image.size), regions=results, timings=timings
        )

    def recognize_all(
        self,
        request: RecognizeRequest | RecognizeRegionsRequest,
        boxes: Sequence[Sequence[float]] | None,
        progress: ProgressFn | None,
    ) -> tuple[LoadedImage, list[RecognizeResult], dict[str, float]]:
        """Search every query of the request, then rank each one's candidates."""
        options = RegionOptions(
            request.box_normalized, request.views, request.car_filter, request.ranker_view, request.ranker_context
        )
        search = Search(
            request.memory, request.image, boxes, request.k, request.retrieval_mode, options, request.min_confidence
        )
        searched = self.searching.search(search, before_work=lambda: self.components.ranker)
        report = progress or (lambda done, total: None)
        total = len(searched.queries) + 1
        report(1, total)
        started = time.perf_counter()
        results = []
        for query, found in zip(searched.queries, searched.results):
            results.append(self.rank_query(searched.loaded.image, query, found, request, options))
            report(len(results) + 1, total)
        rank_s = time.perf_counter() - started
        stages = searched.timings
        return searched.loaded, results, {**stages, "rank_s": rank_s, "total_s": sum(stages.values()) + rank_s}

    def rank_query(
        self,
        image: Image.Image,
        query: Query,
        retrieval: RetrieveResult,
        request: RecognizeRequest | RecognizeRegionsRequest,
        options: RegionOptions,
    ) -> RecognizeResult:
        """Rank one query's retrieved candidates (when there are at least two)."""
        started = time.perf_counter()
        names = [c.label for c in retrieval.candidates]
        ranking, note, levels = None, retrieval.note, retrieval.levels
        if len(names) >= MIN_CANDIDATES:
            shown, context = (image, None) if query.box is None else self.ranker_view(image, query.box, options)
            exemplar_memory = request.memory if request.exemplars else None
            ranking = self.rank_image(
                self.components.ranker,
                shown,
                names,
                request.mode,
                exemplar_memory,
                request.icl,
                context,
                query.tight_embedding,
            )
            label = ranking.best
            by_label = {c.label: c for c in retrieval.candidates}
            fine = [
                FineLabel(r.label, r.score, by_label[r.label].category, by_label[r.label].parent)
                for r in ranking.ranked
            ]
            levels = Levels.of(fine, request.min_confidence)
        else:
            label = names[0] if names else None
            note = (note + "; " if note else "") + "fewer than two candidates, so nothing was ranked"
        proposal = None
        unsure = not retrieval.candidates or best_probability(retrieval, ranking) < request.min_confidence
        if request.propose_when_unsure and unsure:
            proposal = self.describing.propose(image, query.box, request.memory)
        return RecognizeResult(
            label=label,
            retrieval=retrieval,
            ranking=ranking,
            levels=levels,
            note=note,
            timings={"retrieve_s": sum(retrieval.timings.values()), "rank_s": time.perf_counter() - started},
            proposal=proposal,
        )


def best_probability(retrieval: RetrieveResult, ranking: RankOutput | None) -> float:
    """How sure recognition is of its label: the ranker's probability in score mode, else the retrieval
    probability of the label chosen (generate mode's scores are rank weights, not probabilities)."""
    if ranking is not None and ranking.mode == "score":
        return ranking.ranked[0].score
    chosen = ranking.best if ranking is not None else None
    for candidate in retrieval.candidates:
        if chosen is None or candidate.label == chosen:
            return candidate.probability
    return 0.0


def open_exemplar(path: Path) -> Image.Image | None:
    """A stored exemplar as RGB, or None (the candidate is shown without one) when the file vanished
    (a concurrent removal), cannot be read, or is damaged."""
    import logging

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as exc:  # Pillow raises many types on damaged files (OSError, SyntaxError, ValueError...)
        logging.getLogger(__name__).warning(
            "stored exemplar %s cannot be shown (%s: %s); ranked without it", path.name, type(exc).__name__, exc
        )
        return None
