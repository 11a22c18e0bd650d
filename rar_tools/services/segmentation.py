"""Segmentation as an operation: labels from the call or a memory, regions checked, CaR's recurrence on
each region's view, masks back in pixels of the whole image as COCO RLE."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rar_tools.components import Components
from rar_tools.errors import SegmentationError
from rar_tools.limits import MAX_SEGMENT_LABELS
from rar_tools.regions import Box, Frame, check_box, cut_frame, pixel_bounds, square_frame, whole_image
from rar_tools.requests import SegmentRequest
from rar_tools.segmentation import rle
from rar_tools.segmentation.masks import frame_part, mask_box
from rar_tools.vision_schemas import LabelMask, MaskRle, SegmentedRegion, SegmentResult

if TYPE_CHECKING:
    from rar_tools.encoder import ClipEncoder
    from rar_tools.segmentation.gradcam import CamTower
    from rar_tools.segmentation.recurrence import CarSettings, Proposal
    from rar_tools.segmentation.sam import MaskSharpener


class SegmentationService:
    """Masks for labels, without training (CLIP as RNN)."""

    def __init__(self, components: Components) -> None:
        self.components = components

    def segment(self, request: SegmentRequest) -> SegmentResult:
        """One mask per label CLIP keeps, for the whole image or each region (see `SegmentRequest`)."""
        from rar_tools.segmentation.gradcam import open_clip_tower

        labels, source = self.labels(request)
        encoder = self.components.encoder
        started = time.perf_counter()
        loaded = self.components.load(request.image, full_resolution=True)
        regions = self.regions(loaded.image.size, request)
        loaded_at = time.perf_counter()
        texts = encoder.encode_labels(labels)
        cam = open_clip_tower(encoder.model, self.components.settings.segment_cam_layers)
        sam = self.sharpener()
        segmented = [self.segment_region(encoder, cam, sam, loaded.image, region, labels, texts) for region in regions]
        return SegmentResult(
            image_size=list(loaded.image.size),
            labels=labels,
            label_source=source,
            regions=segmented,
            refinement=self.refinement,
            timings={"load_s": loaded_at - started, "segment_s": time.perf_counter() - loaded_at},
        )

    def labels(self, request: SegmentRequest) -> tuple[list[str], str]:
        """The labels to look for, and where they came from: the call, or every label of the memory."""
        if request.labels is not None:
            return list(request.labels), "call"
        store = self.components.store
        store.require(request.memory)
        names = list(store.summary(request.memory).label_counts)
        if not names:
            raise SegmentationError(
                f"memory {request.memory!r} holds no labels: give `labels`, or add some with add_to_memory"
            )
        if len(names) > MAX_SEGMENT_LABELS:
            raise SegmentationError(
                f"memory {request.memory!r} holds {len(names)} labels; segment looks for at most "
                f"{MAX_SEGMENT_LABELS} at once: give `labels` (e.g. the candidates retrieve_candidates returns)"
            )
        return names, "memory"

    def regions(self, size: tuple[int, int], request: SegmentRequest) -> list[Box]:
        """The regions to segment, checked against the image: the whole image, or each box."""
        min_side = self.components.settings.min_box_side
        if min(size) < min_side:
            raise SegmentationError(
                f"the image is {size[0]}x{size[1]} pixels; segment needs at least {min_side:g} pixels a side"
            )
        boxes = request.regions()
        if boxes is None:
            return [whole_image(size)]
        return [check_box(box, size, request.box_normalized, min_side) for box in boxes]

    @property
    def car_settings(self) -> CarSettings:
        from rar_tools.segmentation.recurrence import CarSettings

        s = self.components.settings
        return CarSettings(
            mask_threshold=s.segment_mask_threshold,
            label_threshold=s.segment_label_threshold,
            max_rounds=s.segment_max_rounds,
            refine=s.segment_refine == "guided",
            blur_radius=s.region_blur,
        )

    def sharpener(self) -> MaskSharpener | None:
        """The SAM model when the settings name one (loaded on first use), else None."""
        s = self.components.settings
        return self.components.sam.get(s.model_wait_timeout) if s.sam_model else None

    @property
    def refinement(self) -> str:
        """What sharpens the masks, in words."""
        s = self.components.settings
        steps = ["guided filter"] if s.segment_refine == "guided" else []
        steps += [f"SAM {s.sam_model}"] if s.sam_model else []
        return " + ".join(steps) or "none"

    def segment_region(
        self,
        encoder: ClipEncoder,
        cam: CamTower,
        sam: MaskSharpener | None,
        image: Image.Image,
        region: Box,
        labels: list[str],
        texts: np.ndarray,
    ) -> SegmentedRegion:
        """The recurrence on the region's square view (CLIP's input side), masks back in the image."""
        from rar_tools.segmentation.recurrence import segment_view

        bounds = pixel_bounds(region)
        crop = image.crop(bounds)
        frame = square_frame(whole_image(crop.size), crop.size, 0.0)
        settings = self.car_settings  # the blur's sigma is in pixels of a region view: scaled to this view
        settings = replace(settings, blur_radius=settings.blur_radius * cam.side / self.components.settings.region_side)
        outcome = segment_view(encoder, cam, cut_frame(crop, frame, cam.side), texts, settings)
        masks = [
            self.label_mask(proposal, labels[proposal.label], frame, crop, bounds[:2], image.size, sam)
            for proposal in outcome.proposals
        ]
        return SegmentedRegion(
            box=region.as_list(),
            masks=masks,
            dropped=[[labels[i] for i in round_] for round_ in outcome.dropped],
            rounds=outcome.rounds,
        )

    def label_mask(
        self,
        proposal: Proposal,
        label: str,
        frame: Frame,
        crop: Image.Image,
        offset: tuple[int, int],
        size: tuple[int, int],
        sam: MaskSharpener | None,
    ) -> LabelMask:
        """A proposal's map, back in the crop's pixels and thresholded (then redrawn by SAM, if any), as a
        mask of the whole image."""
        mask = frame_part(proposal.soft, frame, crop.size) >= self.components.settings.segment_mask_threshold
        if sam is not None:
            mask = sam.sharpen(crop, mask)
        full = np.zeros((size[1], size[0]), dtype=bool)
        full[offset[1] : offset[1] + crop.height, offset[0] : offset[0] + crop.width] = mask
        return LabelMask(
            label=label, score=proposal.score, area=int(full.sum()), box=mask_box(full), rle=MaskRle(**rle.encode(full))
        )

    def overlay(self, request: SegmentRequest, result: SegmentResult) -> bytes:
        """A PNG of the result's masks over the request's image (every region's)."""
        from rar_tools.segmentation.overlay import overlay_png

        image = self.components.load(request.image, full_resolution=True).image
        masks = [(m.label, m.rle.model_dump()) for region in result.regions for m in region.masks]
        return overlay_png(image, masks)
