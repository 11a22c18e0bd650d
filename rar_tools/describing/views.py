"""What the MLLM sees of a region when describing it (DynRefer): the tight view for attributes, and the
context views that differ most from it for the caption, the region marked by a red ellipse in each."""

from __future__ import annotations

from PIL import Image

from rar_tools.regions import (
    Box,
    choose_context_steps,
    cut_frame,
    draw_ellipse,
    interpolate_box,
    square_frame,
    view_image,
    whole_image,
)

VIEW_SIDE = 448  # side of each view shown (the backend may reduce it further)


def marked_view(image: Image.Image, box: Box, view_box: Box, side: int) -> Image.Image:
    """The view box as a `side` square, with a red ellipse around `box` inside it."""
    frame = square_frame(view_box, image.size, 0.0)
    return draw_ellipse(cut_frame(image, frame, side), frame.to_view(box, side))


def description_views(
    image: Image.Image, box: Box, views: int, side: int = VIEW_SIDE
) -> tuple[list[Image.Image], list[float]]:
    """The tight view (the box alone, padded to a square) and `views - 1` DynRefer context views (the
    steps t whose view's pHash differs most from the box's), with their steps (0 for the tight view).
    A box that is the whole image has no context to add: its one view is the image."""
    tight = view_image(image, box, side)
    if views <= 1 or box == whole_image(image.size):
        return [tight], [0.0]
    steps = choose_context_steps(image, box, views - 1)
    context = [marked_view(image, box, interpolate_box(box, image.size, t), side) for t in steps]
    return [tight, *context], [0.0, *steps]
