"""The pipeline's components, built from one `Settings`: the CLIP encoder, the ranker, the detector
(each loaded lazily, in a background thread) and the memory store (opened on first use).

The services take a `Components` and ask it for what they need; nothing here runs an operation.
Importing this module imports no model library: each loader imports its own on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, TypeVar

from PIL import Image

from rar_tools.errors import RankerError
from rar_tools.hub import HubAccess, clip_needs_hub, is_local
from rar_tools.images import ImageLimits, LoadedImage, load_image
from rar_tools.lazy import BackgroundModel
from rar_tools.requests import ModelName
from rar_tools.settings import Settings
from rar_tools.threads import available_cores, default_threads, parameter_count, preprocess_workers

if TYPE_CHECKING:
    from rar_tools.detection import Detector
    from rar_tools.encoder import ClipEncoder
    from rar_tools.locking import DataDirLock
    from rar_tools.memory import MemoryStore
    from rar_tools.ranking import Ranker
    from rar_tools.region_recognition import ViewConfig
    from rar_tools.segmentation.sam import MaskSharpener

log = logging.getLogger(__name__)
T = TypeVar("T")


class Components:
    """Encoder, ranker, detector and store of one configuration, each built once, thread-safe."""

    def __init__(self, settings: Settings | None = None, *, store: MemoryStore | None = None) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.image_limits = ImageLimits(
            max_bytes=s.max_image_bytes,
            max_pixels=s.max_image_pixels,
            allowed_dirs=tuple(s.allow_dir),
            allow_urls=s.allow_urls,
            url_timeout_s=s.url_timeout,
        )
        self._store = store
        self._store_lock = threading.Lock()
        self._claim: DataDirLock | None = None
        self.hub = HubAccess()  # asked once, by the first load that may need the Hub
        self.clip = BackgroundModel("CLIP encoder", self._load_encoder)
        self.mllm = BackgroundModel("MLLM ranker", self._load_ranker)
        self.detector = BackgroundModel("object detector", self._load_detector)  # on first use only
        self.label_index = BackgroundModel("memory label index", self._read_labels)
        self.sam = BackgroundModel("SAM mask model", self._load_sam)  # on first use, only with --sam-model

    # -- loaders -----------------------------------------------------------------------------------
    def _load_encoder(self) -> ClipEncoder:
        from rar_tools.encoder import create_encoder

        s = self.settings
        what = f"the CLIP model {s.clip_model!r} (weights {s.clip_pretrained})"
        workers = preprocess_workers(s.threads or available_cores())
        with self.hub.loading(clip_needs_hub(s.clip_model, s.clip_pretrained), what, "--clip-model"):
            encoder = create_encoder(
                *(s.clip_model, s.clip_pretrained, s.device, s.batch_size, s.templates, s.clip_precision),
                preprocess_workers=workers,
            )
        return self._with_threads(encoder, encoder.model)

    def _load_ranker(self) -> Ranker:
        from rar_tools.ranking import RankerConfig, create_ranker

        s = self.settings
        config = RankerConfig(
            model=s.ranker_model,
            device=s.device,
            max_new_tokens=s.ranker_max_new_tokens,
            max_image_side=s.ranker_image_side,
            url=s.ranker_url,
            api_model=s.ranker_api_model,
            api_key=s.ranker_api_key,
            timeout_s=s.ranker_timeout,
            score_normalisation=s.score_normalisation,
            permutations=s.rank_permutations,
            adapter=str(s.ranker_adapter) if s.ranker_adapter else None,
            merge_adapter=s.ranker_adapter_merge,
        )
        needs_hub = s.ranker_url is None and not is_local(s.ranker_model)
        with self.hub.loading(needs_hub, f"the ranker model {s.ranker_model!r}", "--ranker-model"):
            ranker = create_ranker(config)
        local = getattr(ranker, "model", None)  # a remote ranker has no model here
        return ranker if local is None else self._with_threads(ranker, local)

    def _load_detector(self) -> Detector:
        from rar_tools.detection import Detector

        model = self.settings.detector_model
        with self.hub.loading(not is_local(model), f"the detector model {model!r}", "--detector-model"):
            detector = Detector(model, self.settings.device)
        return self._with_threads(detector, detector.model)

    def _load_sam(self) -> MaskSharpener:
        from rar_tools.segmentation.sam import MaskSharpener

        return MaskSharpener(self.settings.sam_model or "", self.settings.device)

    def _read_labels(self) -> int:
        """Read every memory's entry labels, so that searches need not (see `MemoryStore.read_labels`),
        and start mirroring each memory in process (`memory/mirror.py`)."""
        read = 0
        for name in self.store.names():
            read += self.store.read_labels(name)
            self.store.mirrors.current(name)
        return read

    def threads_for(self, module: object) -> int:
        """The CPU threads a loaded model runs on: `--threads`, else chosen from its size and the
        cores (see `rar_tools.threads`)."""
        if self.settings.threads is not None:
            return self.settings.threads
        return default_threads(parameter_count(module), available_cores())

    def _with_threads(self, model: T, module: object) -> T:
        """`model` set to run on its threads (logged once, as it loads)."""
        model.threads = self.threads_for(module)  # type: ignore[attr-defined]
        log.info("%s runs on %d CPU thread(s) (--threads to change)", type(model).__name__, model.threads)
        return model

    def start_loading(self) -> None:
        """Load the models, and read the memories' labels, in background threads (a server calls this
        at start; nothing waits for the labels)."""
        self.clip.start()
        if not self.settings.no_ranker:
            self.mllm.start()
        self.label_index.start()

    # -- what the services use ---------------------------------------------------------------------
    @property
    def encoder(self) -> ClipEncoder:
        """The CLIP encoder, waited for."""
        return self.clip.get(self.settings.model_wait_timeout)

    @property
    def ranker(self) -> Ranker:
        """The ranker, waited for; a clear error when the configuration has none."""
        if self.settings.no_ranker:
            raise RankerError(
                "no ranker: this server was started with --no-ranker. Ranking needs an MLLM: restart "
                "without --no-ranker (--ranker-model ID_OR_FOLDER, or --ranker-url URL)"
            )
        return self.mllm.get(self.settings.model_wait_timeout)

    @property
    def detector_model(self) -> Detector:
        """The detector, loaded on first use and waited for."""
        return self.detector.get(self.settings.model_wait_timeout)

    def loading(self, needed: frozenset[ModelName]) -> list[BackgroundModel]:
        """The background models behind `needed` that a caller should wait for (not a ranker the
        configuration lacks: the operation reports that itself)."""
        models = {"encoder": self.clip, "detector": self.detector}
        if not self.settings.no_ranker:
            models["ranker"] = self.mllm
        return [models[name] for name in ("encoder", "ranker", "detector") if name in needed and name in models]

    @property
    def store(self) -> MemoryStore:
        """The memory store, opened (and its data folder locked) on first use."""
        with self._store_lock:  # opened once, also when a background thread asks first
            if self._store is None:
                from rar_tools.memory import MemoryStore, open_http_client

                s = self.settings
                client = open_http_client(s.chroma_url, s.chroma_database) if s.chroma_url else None
                self._store = MemoryStore(s.data_dir, client, mirror=not s.no_in_process_index)
            return self._store

    def claim_data_dir(self) -> None:
        """Lock the data folder for this process now, without opening the store: a server does this at
        start, so a second server on the same folder is refused at once."""
        from rar_tools.locking import lock_data_dir

        if self._claim is None:
            self._claim = lock_data_dir(self.settings.data_dir)

    @property
    def store_opened(self) -> bool:
        """Whether the store has finished opening (before that, nothing can have been written)."""
        return self._store is not None

    def close(self, wait_s: float | None = None) -> bool:
        """Close the store and release the data folder (models stay loaded), once the store is not
        being opened and no memory write is running: waits up to `wait_s` seconds in all for that
        (None: as long as it takes). Returns False, leaving the store open, when it is still busy."""
        from rar_tools.locking import unlock_data_dir

        deadline = None if wait_s is None else time.monotonic() + wait_s
        if not self._store_lock.acquire(timeout=-1 if deadline is None else wait_s):
            return False
        try:
            if self._store is not None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._store.close(left):
                    return False
                self._store = None
        finally:
            self._store_lock.release()
        if self._claim is not None:
            unlock_data_dir(self._claim)
            self._claim = None
        return True

    @property
    def view_config(self) -> ViewConfig:
        """How region views are made, from the settings."""
        from rar_tools.region_recognition import ViewConfig

        s = self.settings
        return ViewConfig(s.region_side, s.region_context, s.region_blur, s.tight_view_weight)

    def load(self, source: str, full_resolution: bool = False) -> LoadedImage:
        """Decode an image argument and, unless `full_resolution` (boxes are in its pixels), bound its
        size to the stored-exemplar side."""
        loaded = load_image(source, self.image_limits)
        side = self.settings.stored_image_side
        if not full_resolution and max(loaded.image.size) > side:
            image = loaded.image.copy()
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            loaded = LoadedImage(image, loaded.sha256, loaded.source_path)
        return loaded
