"""Region descriptions as an operation (DynRefer views, DetCLIPv3 labels): the MLLM describes each box,
its answer is parsed, and the label it proposes is checked against a memory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from PIL import Image

from rar_tools.components import Components
from rar_tools.describing.check import memory_match
from rar_tools.describing.parsing import parse_description
from rar_tools.describing.prompts import description_parts
from rar_tools.describing.views import description_views
from rar_tools.limits import DEFAULT_DESCRIBE_VIEWS, EntryKind
from rar_tools.regions import Box, check_box, whole_image
from rar_tools.requests import DescribeRegionsRequest
from rar_tools.services.search import SearchService
from rar_tools.vision_schemas import DescribeResult, LabelProposal, ProposalCheck, RegionDescription

if TYPE_CHECKING:
    from rar_tools.ranking import Ranker

CHECK_K = 5  # labels retrieved per proposed name when checking it against a memory


class DescriptionService:
    """Captions, attributes and label proposals for regions, from the MLLM."""

    def __init__(self, components: Components, search: SearchService) -> None:
        self.components = components
        self.searching = search

    def describe_regions(self, request: DescribeRegionsRequest) -> DescribeResult:
        """Describe each box of the image (see `DescribeRegionsRequest`)."""
        if request.memory is not None:
            self.components.store.require(request.memory)
        ranker = self.components.ranker
        started = time.perf_counter()
        loaded = self.components.load(request.image, full_resolution=True)
        size, min_side = loaded.image.size, self.components.settings.min_box_side
        regions = [check_box(box, size, request.box_normalized, min_side) for box in request.boxes]
        loaded_at = time.perf_counter()
        described = [self.describe(ranker, loaded.image, box, request.views, request.memory) for box in regions]
        return DescribeResult(
            image_size=list(size),
            regions=described,
            describer=ranker.name,
            timings={"load_s": loaded_at - started, "describe_s": time.perf_counter() - loaded_at},
        )

    def propose(self, image: Image.Image, box: Box | None, memory: str) -> RegionDescription:
        """A description of a region (None: the whole image) for recognition that is unsure: the tight
        view and one context view where the ranker takes several images, the proposal checked."""
        ranker = self.components.ranker
        views = DEFAULT_DESCRIBE_VIEWS if ranker.multi_image else 1
        return self.describe(ranker, image, box or whole_image(image.size), views, memory)

    def describe(
        self, ranker: Ranker, image: Image.Image, box: Box, views: int, memory: str | None
    ) -> RegionDescription:
        """One region: its views shown to the MLLM, the answer parsed, the proposal checked."""
        s = self.components.settings
        started = time.perf_counter()
        shown, steps = description_views(image, box, views)
        text = ranker.complete(description_parts(shown, s.ranker_image_side), s.describe_max_new_tokens)
        timings = {"describe_s": time.perf_counter() - started}
        parsed = parse_description(text)
        proposal = None
        if parsed.label is not None:
            proposal = LabelProposal(
                phrase=parsed.label.phrase, category=parsed.label.category, parent=parsed.label.parent
            )
        check = None
        if memory is not None and proposal is not None:
            checked_at = time.perf_counter()
            check = self.check(memory, proposal)
            timings["check_s"] = time.perf_counter() - checked_at
        return RegionDescription(
            box=box.as_list(),
            caption=parsed.caption,
            attributes=parsed.attributes,
            proposal=proposal,
            fallback=parsed.fallback,
            missing=list(parsed.missing),
            raw_text=text,
            view_steps=steps,
            check=check,
            timings=timings,
        )

    def check(self, memory: str, proposal: LabelProposal) -> ProposalCheck:
        """The proposal's category and parent retrieved as text from `memory`: held, near or none each.

        Label texts are searched when the memory holds any (text-to-text similarity), else exemplar
        images (text-to-image, a lower scale: its own near threshold)."""
        encoder, s = self.components.encoder, self.components.settings
        held = self.components.store.kinds(memory)
        kind: EntryKind | None = "text" if "text" in held else "image" if "image" in held else None
        near = s.near_text_similarity if kind == "text" else s.near_image_similarity
        names = [proposal.category] + ([proposal.parent] if proposal.parent else [])
        matches = []
        for name, embedding, coarse in zip(names, encoder.encode_labels(names), (False, True)):
            found = []
            if kind is not None:
                retrieval = self.searching.retriever.retrieve(
                    memory, encoder.identity, embedding, k=CHECK_K, mode=kind, how="max"
                )
                found = retrieval.candidates
            matches.append(memory_match(name, found, kind, near, coarse))
        return ProposalCheck(memory=memory, category=matches[0], parent=matches[1] if len(matches) > 1 else None)
