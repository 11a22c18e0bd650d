"""Optional mask sharpening with a user-given SAM checkpoint (transformers `SamModel`, `--sam-model`).

SAM is prompted with the box around a CLIP mask and returns three candidate masks; the one that
agrees best with the CLIP mask (highest IoU) replaces it, so SAM draws the edges while CLIP keeps
deciding what the label covers. When no candidate overlaps the CLIP mask at all, it is kept as it is.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from PIL import Image

from rar_tools.devices import resolve_device
from rar_tools.pretrained import load_pretrained
from rar_tools.segmentation.masks import mask_box


def load_sam(model: str, device: str):
    """`(processor, model)` of a SAM checkpoint (e.g. facebook/sam-vit-base), by hub id or local folder."""
    from transformers import SamModel, SamProcessor

    processor, sam = load_pretrained("SAM", model, SamProcessor.from_pretrained, SamModel.from_pretrained)
    return processor, sam.to(device).eval()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


class MaskSharpener:
    """A loaded SAM that redraws masks from their boxes. Thread-safe."""

    def __init__(self, model: str, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.processor, self.model = load_sam(model, self.device)
        self.name = f"SAM {model}"
        self._lock = threading.Lock()

    def candidates(self, image: Image.Image, box: list[float]) -> np.ndarray:
        """SAM's three masks (3, height, width) for a box prompt on `image`."""
        inputs = self.processor(images=image, input_boxes=[[box]], return_tensors="pt")
        with self._lock, torch.inference_mode():
            output = self.model(**inputs.to(self.device), multimask_output=True)
        masks = self.processor.image_processor.post_process_masks(
            output.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )
        return masks[0][0].numpy().astype(bool)

    def sharpen(self, image: Image.Image, mask: np.ndarray) -> np.ndarray:
        """The SAM mask (for the box around `mask`) that agrees best with `mask`; `mask` itself when it is
        empty or no SAM mask overlaps it."""
        box = mask_box(mask)
        if box is None:
            return mask
        found = self.candidates(image, box)
        scores = [iou(candidate, mask) for candidate in found]
        best = int(np.argmax(scores))
        return found[best] if scores[best] > 0 else mask
