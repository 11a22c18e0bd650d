"""The Python API: one facade over the pipeline's services.

    from rar_tools import RarTools, Settings
    tools = RarTools(Settings(clip_model="local-dir:/models/clip"))
    tools.add_images("birds", ["/photos/jay.jpg"], label="Blue Jay")
    print(tools.retrieve("birds", "/photos/query.jpg", k=5).candidates)

Each operation takes its request model (`rar_tools.requests`), or the same arguments by position and
keyword; the MCP server and the CLI are thin layers over these methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rar_tools.api_upkeep import UpkeepCalls
from rar_tools.components import Components
from rar_tools.images import LoadedImage
from rar_tools.request_base import takes
from rar_tools.requests import (
    AddRequest,
    DeleteRequest,
    DescribeRegionsRequest,
    DetectRequest,
    ListRequest,
    RankCandidatesRequest,
    RecognizeRegionsRequest,
    RecognizeRequest,
    RemoveRequest,
    RetrieveRegionsRequest,
    RetrieveRequest,
    SegmentRequest,
)
from rar_tools.schemas import (
    AddResult,
    DeleteResult,
    DetectResult,
    MemoryList,
    RankOutput,
    RecognizeResult,
    RegionsResult,
    RemoveResult,
    RetrieveResult,
)
from rar_tools.services.description import DescriptionService
from rar_tools.services.detection import DetectionService
from rar_tools.services.memory import MemoryService
from rar_tools.services.recognition import RecognitionService
from rar_tools.services.search import SearchService
from rar_tools.services.segmentation import SegmentationService
from rar_tools.services.upkeep import UpkeepService
from rar_tools.settings import Settings
from rar_tools.validation import check_label
from rar_tools.vision_schemas import DescribeResult, SegmentResult

if TYPE_CHECKING:
    from rar_tools.memory import MemoryStore

LABELS_ORDER = ("memory", "labels", "category", "parent", "hierarchy")


class RarTools(UpkeepCalls):
    """Encoder, memory store, ranker and detector, created from one `Settings`. Safe to call from many
    threads at once: each model runs one call at a time, and the store serialises its writes."""

    def __init__(self, settings: Settings | None = None, *, store: MemoryStore | None = None) -> None:
        self.components = Components(settings, store=store)
        self.memories = MemoryService(self.components)
        self.searching = SearchService(self.components)
        self.describing = DescriptionService(self.components, self.searching)
        self.recognition = RecognitionService(self.components, self.searching, self.describing)
        self.detection = DetectionService(self.components)
        self.upkeep = UpkeepService(self.components)
        self.segmentation = SegmentationService(self.components)
        self.settings = self.components.settings

    # -- components --------------------------------------------------------------------------------
    clip = property(lambda self: self.components.clip, doc="the CLIP encoder's background loader")
    mllm = property(lambda self: self.components.mllm, doc="the ranker's background loader")
    detector = property(lambda self: self.components.detector, doc="the detector's loader (first use)")
    label_index = property(lambda self: self.components.label_index, doc="the memories' label reader")

    @property
    def store(self) -> MemoryStore:
        """The memory store, opened (and its data folder locked) on first use."""
        return self.components.store

    @property
    def encoder(self):
        """The CLIP encoder, waited for."""
        return self.components.encoder

    @property
    def ranker(self):
        """The ranker, waited for (a clear error with --no-ranker)."""
        return self.components.ranker

    def ensure_ranker(self):
        """The ranker, waited for: callers use it to fail before any image work when there is none."""
        return self.components.ranker

    def start_loading(self) -> None:
        """Load the models, and read the memories' labels, in background threads."""
        self.components.start_loading()

    def claim_data_dir(self) -> None:
        """Lock the data folder for this process now, without opening the store."""
        self.components.claim_data_dir()

    def close(self, wait_s: float | None = None) -> bool:
        """Close the store and release the data folder (models stay loaded); see `Components.close`."""
        return self.components.close(wait_s)

    def __enter__(self) -> RarTools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def load(self, source: str, full_resolution: bool = False) -> LoadedImage:
        """Decode an image argument (see `Components.load`)."""
        return self.components.load(source, full_resolution)

    # -- calls served by one service as they are (their signatures are the services') --------------
    add_entries = property(lambda self: self.memories.add_entries, doc="store entries already embedded")
    describe_memory = property(lambda self: self.memories.describe_memory, doc="one memory's counts and encoder")
    exemplar_file = property(lambda self: self.memories.exemplar_file, doc="the stored file of an exemplar")
    exemplar_thumbnails = property(lambda self: self.memories.exemplar_thumbnails, doc="candidates' thumbnails")
    exemplar_jpeg = property(lambda self: self.memories.exemplar_jpeg, doc="an exemplar's stored copy, checked")
    retrieve_embedding = property(lambda self: self.searching.retrieve_embedding, doc="retrieve by embedding")
    rank_loaded = property(lambda self: self.recognition.rank_loaded, doc="rank names for a decoded image")

    # -- operations: each takes its request model, or its fields by position and keyword -------------
    @takes(AddRequest, progress=True)
    def add_images(self, request: AddRequest, progress=None) -> AddResult:
        """Store labelled exemplar images (see `MemoryService.add_images`)."""
        return self.memories.add_images(request, progress)

    @takes(AddRequest, order=LABELS_ORDER)
    def add_labels(self, request: AddRequest) -> AddResult:
        """Store label texts (zero-shot entries)."""
        return self.memories.add_labels(request)

    @takes(RemoveRequest)
    def remove(self, request: RemoveRequest) -> RemoveResult:
        """Remove entries by id and/or every entry of a label."""
        return self.memories.remove(request)

    @takes(DeleteRequest)
    def delete_memory(self, request: DeleteRequest) -> DeleteResult:
        """Delete a whole memory, with its exemplar copies no other memory uses."""
        return self.memories.delete_memory(request)

    @takes(ListRequest)
    def list_memories(self, request: ListRequest) -> MemoryList:
        """Every memory with its counts per kind and per label, and its encoder."""
        return self.memories.list_memories(request)

    @takes(RetrieveRequest)
    def retrieve(self, request: RetrieveRequest) -> RetrieveResult:
        """The k best distinct labels for an image, or for the region `box` of it."""
        return self.searching.retrieve(request)

    @takes(RetrieveRegionsRequest)
    def retrieve_regions(self, request: RetrieveRegionsRequest) -> list[RetrieveResult]:
        """`retrieve` for many boxes of one image, their CLIP views embedded in one batch."""
        return self.searching.retrieve_regions(request)

    @takes(RankCandidatesRequest)
    def rank(self, request: RankCandidatesRequest) -> RankOutput:
        """Order candidate labels for an image, or for its region `box`, with the MLLM, best first."""
        return self.recognition.rank(request)

    @takes(RecognizeRequest, progress=True)
    def recognize(self, request: RecognizeRequest, progress=None) -> RecognizeResult:
        """Retrieve k candidates from `memory`, then rank them with the MLLM: RAR in one call."""
        return self.recognition.recognize(request, progress)

    @takes(RecognizeRegionsRequest, progress=True)
    def recognize_regions(self, request: RecognizeRegionsRequest, progress=None) -> RegionsResult:
        """Recognise many boxes of one image, their CLIP work batched."""
        return self.recognition.recognize_regions(request, progress)

    @takes(DetectRequest, progress=True)
    def detect(self, request: DetectRequest, progress=None) -> DetectResult:
        """Boxes for text queries from the open-vocabulary detector (loaded on first use)."""
        return self.detection.detect(request, progress)

    @takes(SegmentRequest)
    def segment(self, request: SegmentRequest) -> SegmentResult:
        """Masks for labels without training (CLIP as RNN), in the image or inside boxes."""
        return self.segmentation.segment(request)

    @takes(DescribeRegionsRequest)
    def describe_regions(self, request: DescribeRegionsRequest) -> DescribeResult:
        """Caption, attributes and a proposed phrase|category|parent label per box, from the MLLM."""
        return self.describing.describe_regions(request)


__all__ = ["RarTools", "check_label"]
