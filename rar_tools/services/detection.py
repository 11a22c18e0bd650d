"""Open-vocabulary detection as an operation: boxes for coarse text queries."""

from __future__ import annotations

import time

from rar_tools.components import Components
from rar_tools.requests import DetectRequest, ProgressFn
from rar_tools.schemas import Detection, DetectResult


class DetectionService:
    """Boxes from the detector (loaded on first use), best first, in pixels of the image."""

    def __init__(self, components: Components) -> None:
        self.components = components

    def detect(self, request: DetectRequest, progress: ProgressFn | None = None) -> DetectResult:
        """Boxes for the request's text queries: each can be named with `recognize_regions`.
        `progress(done, 2)` is told after the image is read and after detection."""
        report = progress or (lambda done, total: None)
        s = self.components.settings
        threshold = s.detector_threshold if request.threshold is None else request.threshold
        detector = self.components.detector_model
        started = time.perf_counter()
        loaded = self.components.load(request.image, full_resolution=True)
        loaded_at = time.perf_counter()
        report(1, 2)
        found = detector.detect(loaded.image, request.queries, threshold, request.max_boxes, min_side=s.min_box_side)
        report(2, 2)
        return DetectResult(
            detections=[Detection(box=d.box.as_list(), score=d.score, query=d.query) for d in found],
            image_size=list(loaded.image.size),
            detector=detector.name,
            timings={"load_s": loaded_at - started, "detect_s": time.perf_counter() - loaded_at},
        )
