"""What a ranking request shows the model, in order, as backend-neutral parts.

Every backend shows the same layout:

1. the query image, then the context image when there is one (the whole picture, region marked);
2. the ranking instruction (`prompts.request_prompt`), which names the candidates as quoted data;
3. for the first candidates that carry an exemplar (at most `MAX_EXEMPLAR_IMAGES`), the quoted name
   as text, then that exemplar image.

`ranking_parts` builds that list once, images already downscaled to the backend's side limit; a
backend only renders each `TextPart` / `ImagePart` into its own format (chat-template content with
image placeholders for transformers, `image_url` data-URL parts for OpenAI-compatible endpoints).
Light to import: PIL only, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from rar_tools.errors import RankerError
from rar_tools.limits import MAX_EXEMPLAR_IMAGES
from rar_tools.ranking.base import RankRequest
from rar_tools.ranking.prompts import request_prompt


@dataclass(frozen=True)
class TextPart:
    """Text shown to the model."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image shown to the model: RGB, its longer side within the backend's limit."""

    image: Image.Image


Part = TextPart | ImagePart


# The most elongated image shown to a model: image processors refuse thin images (Qwen2-VL's above
# 200:1, "absolute aspect ratio must be smaller than 200"), so thinner ones are padded to this.
MAX_ASPECT_RATIO = 50
PADDING = (255, 255, 255)


def downscale(image: Image.Image, max_side: int) -> Image.Image:
    """An RGB copy of `image` whose longer side is at most `max_side` pixels, padded (centred on
    white) to at most `MAX_ASPECT_RATIO`:1, so that a 1000x4 query or exemplar can still be shown."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return pad_to_aspect(image, MAX_ASPECT_RATIO)


def pad_to_aspect(image: Image.Image, max_ratio: float) -> Image.Image:
    """`image` centred on a white canvas whose shorter side is at least 1/`max_ratio` of its longer."""
    width, height = image.size
    short = -(-max(width, height) // max_ratio)  # ceiling
    if min(width, height) >= short:
        return image
    size = (width, int(short)) if width >= height else (int(short), height)
    canvas = Image.new("RGB", size, PADDING)
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


def exemplar_pairs(request: RankRequest, names: list[str]) -> list[tuple[str, Image.Image]]:
    """(shown name, image) for the first candidates that carry an exemplar, at most `MAX_EXEMPLAR_IMAGES`."""
    if request.exemplars is None:
        return []
    if len(request.exemplars) != len(request.candidates):
        raise RankerError("exemplars must hold one image or None per candidate, in candidate order")
    pairs = [(n, img) for n, img in zip(names, request.exemplars) if img is not None]
    return pairs[:MAX_EXEMPLAR_IMAGES]


def exemplar_label(name: str) -> str:
    """The text introducing one exemplar image: its quoted (repr) name."""
    return f" {name!r}:"


def ranking_parts(request: RankRequest, names: list[str], max_side: int) -> list[Part]:
    """The user turn of a ranking request: query image (and its context image), the instruction
    for the shown `names`, then each exemplar's quoted name and image."""
    pairs = exemplar_pairs(request, names)
    text = request_prompt(names, request.icl, request.context is not None, bool(pairs))
    queries = [request.image] if request.context is None else [request.image, request.context]
    parts: list[Part] = [ImagePart(downscale(image, max_side)) for image in queries]
    parts.append(TextPart(text))
    for name, image in pairs:
        parts.append(TextPart(exemplar_label(name)))
        parts.append(ImagePart(downscale(image, max_side)))
    return parts


def image_count(parts: list[Part]) -> int:
    """How many images `parts` show."""
    return sum(isinstance(part, ImagePart) for part in parts)
