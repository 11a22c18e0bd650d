"""Open-vocabulary box proposals (OWLv2 / OWL-ViT from transformers), to be named by region recognition.

The DetCLIPv3-like flow without training: the detector finds boxes for coarse queries ("a bird"),
then `recognize_regions` names each box at fine grain from a memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from rar_tools.devices import resolve_device
from rar_tools.errors import ModelLoadError
from rar_tools.pretrained import load_pretrained
from rar_tools.regions import Box
from rar_tools.threads import use_threads

log = logging.getLogger(__name__)

# model_type -> whether its image processor pads the image to a square (bottom and right) first;
# boxes come back relative to that square (OWLv2) or to the image itself (OWL-ViT, resized to a square).
PADS_TO_SQUARE = {"owlv2": True, "owlvit": False}
MAX_INPUT_SIDE = 1280  # larger images are reduced first; the processor reduces them further anyway


@dataclass(frozen=True)
class Detection:
    """One proposed box, in pixels of the image given, with its score and the query it matched."""

    box: Box
    score: float
    query: str


def load_detector(model: str, device: str):
    """`(processor, model)` of a zero-shot object detector, by hub id or local folder."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    loaders = (AutoProcessor.from_pretrained, AutoModelForZeroShotObjectDetection.from_pretrained)
    processor, detector = load_pretrained("detector", model, *loaders)
    family = detector.config.model_type
    if family not in PADS_TO_SQUARE:
        raise ModelLoadError(
            f"detector model {model!r} is a {family!r} model; supported are OWLv2 and OWL-ViT checkpoints "
            "(e.g. google/owlv2-base-patch16-ensemble)"
        )
    return processor, detector.to(device).eval()


def centre_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) rows to (x1, y1, x2, y2) rows."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def select_boxes(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, max_boxes: int, nms_iou: float, min_side: float
) -> list[int]:
    """Indices of the boxes kept: score at least `threshold`, both sides at least `min_side`,
    class-agnostic non-maximum suppression at `nms_iou`, best `max_boxes` first."""
    from torchvision.ops import nms

    sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    candidates = torch.nonzero((scores >= threshold) & (sides >= min_side)).flatten()
    kept = nms(boxes[candidates], scores[candidates], nms_iou)
    return candidates[kept][:max_boxes].tolist()


class Detector:
    """A loaded OWLv2 / OWL-ViT model with its processor. Thread-safe."""

    def __init__(self, model: str, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.processor, self.model = load_detector(model, self.device)
        self.name = f"transformers:{model}"
        self.pads_to_square = PADS_TO_SQUARE[self.model.config.model_type]
        self.threads: int | None = None  # torch threads per call (None: leave torch's setting alone)
        self._lock = threading.Lock()

    def detect(
        self,
        image: Image.Image,
        queries: Sequence[str],
        threshold: float = 0.1,
        max_boxes: int = 50,
        nms_iou: float = 0.5,
        min_side: float = 4.0,
    ) -> list[Detection]:
        """Boxes for the text `queries`, best first, in pixels of `image`."""
        scale = min(1.0, MAX_INPUT_SIDE / max(image.size))
        shown = (
            image
            if scale == 1.0
            else image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
            )
        )
        inputs = self.processor(text=[list(queries)], images=shown, return_tensors="pt", truncation=True)
        with self._lock, torch.inference_mode():
            use_threads(self.threads)
            outputs = self.model(**inputs.to(self.device))
        scores, labels = outputs.logits[0].float().sigmoid().max(dim=-1)
        width, height = image.size
        frame = torch.tensor([width, height, width, height], dtype=torch.float32)
        if self.pads_to_square:
            frame[:] = max(width, height)
        boxes = centre_to_corners(outputs.pred_boxes[0].float().cpu()) * frame
        boxes = boxes.clamp(min=0).minimum(torch.tensor([width, height, width, height], dtype=torch.float32))
        scores, labels = scores.cpu(), labels.cpu()
        return [
            Detection(Box(*boxes[i].tolist()), float(scores[i]), queries[int(labels[i])])
            for i in select_boxes(boxes, scores, threshold, max_boxes, nms_iou, min_side)
        ]
