"""Benchmark inputs: photo-like JPEG files and clustered embeddings, with exact label search over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_SIZE = (640, 480)
EXEMPLAR_COSINE = 0.7  # cosine of an exemplar to its label's centre, as with real CLIP features
LABELS_PER_GROUP = 20  # labels per group of look-alikes (species of one genus, say)
DRAW_BLOCK = 65_536

# Label names for the encode and rank sections: bird species, as a fine-grained memory would hold.
# The tiny test ranker's tokenizer is trained on these names (testing.tiny_mllm takes them from here),
# so the tiny model tokenises them as compactly as a real tokenizer would.
LABEL_NAMES = (
    "house sparrow",
    "song sparrow",
    "tree sparrow",
    "barn swallow",
    "cliff swallow",
    "tree swallow",
    "american crow",
    "fish crow",
    "common raven",
    "blue jay",
    "green jay",
    "northern cardinal",
    "american robin",
    "european robin",
    "black-capped chickadee",
    "carolina wren",
    "house wren",
    "red-winged blackbird",
    "brewer blackbird",
    "rusty blackbird",
    "bald eagle",
    "golden eagle",
    "red-tailed hawk",
    "cooper hawk",
    "peregrine falcon",
    "american kestrel",
    "great horned owl",
    "barn owl",
    "snowy owl",
    "mallard",
    "wood duck",
    "canada goose",
    "mute swan",
    "great blue heron",
    "great egret",
    "snowy egret",
    "brown pelican",
    "herring gull",
    "ring-billed gull",
    "common tern",
    "atlantic puffin",
    "emperor penguin",
    "king penguin",
    "ruby-throated hummingbird",
    "anna hummingbird",
    "downy woodpecker",
    "hairy woodpecker",
    "pileated woodpecker",
    "northern flicker",
    "yellow warbler",
    "pine warbler",
    "cape may warbler",
    "indigo bunting",
    "painted bunting",
    "scarlet tanager",
    "summer tanager",
    "baltimore oriole",
    "cedar waxwing",
    "laysan albatross",
    "black-footed albatross",
    "white pelican",
    "golden retriever",
    "labrador retriever",
    "cocker spaniel",
    "german shepherd",
    "tabby cat",
    "persian cat",
    "sports car",
    "pickup truck",
    "school bus",
    "mountain bike",
    "sailboat",
    "airliner",
    "coffee mug",
    "wine glass",
    "teapot",
    "laptop",
    "keyboard",
    "computer mouse",
    "cell phone",
    "television",
    "armchair",
    "sofa",
    "dining table",
    "desk lamp",
    "umbrella",
    "backpack",
    "handbag",
    "suitcase",
    "tennis racket",
    "baseball bat",
    "skateboard",
    "surfboard",
    "banana",
    "apple",
    "orange",
    "broccoli",
    "carrot",
    "pizza",
    "donut",
    "sunflower",
    "daisy",
    "red rose",
)


def write_photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = PHOTO_SIZE) -> list[str]:
    """`count` distinct JPEG files (smooth colour fields with grain, about the size of a phone photo
    scaled to 640x480); returns their absolute paths. Existing files are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"photo-{seed}-{index:05d}.jpg"
        if not path.exists():
            rng = np.random.default_rng([seed, index])
            coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
            grain = rng.integers(-12, 13, size=field.shape, dtype=np.int16)
            Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path.resolve()))
    return paths


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class ClusteredSpace:
    """Label centres in `dim` dimensions: a shared direction (CLIP features sit in a narrow cone), a
    direction per group of look-alike labels, and one per label. Centres of labels in one group have
    cosine about 0.75, across groups about 0.5; exemplars lie at cosine about 0.7 from their centre."""

    centres: np.ndarray

    @classmethod
    def create(cls, labels: int, dim: int, rng: np.random.Generator) -> ClusteredSpace:
        shared = unit_rows(rng.normal(size=dim))
        groups = unit_rows(rng.normal(size=(-(-labels // LABELS_PER_GROUP), dim)))
        own = unit_rows(rng.normal(size=(labels, dim)))
        return cls(unit_rows(0.7 * shared + 0.5 * groups[np.arange(labels) // LABELS_PER_GROUP] + 0.5 * own))

    def draw(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One unit vector per label index, at cosine about EXEMPLAR_COSINE from its centre (drawn a
        block at a time, so that a million 512-d vectors never need more than their own 2 GB)."""
        spread = np.sqrt(1.0 / EXEMPLAR_COSINE**2 - 1.0)
        dim = self.centres.shape[1]
        out = np.empty((len(labels), dim), dtype=np.float32)
        for start in range(0, len(labels), DRAW_BLOCK):
            block = labels[start : start + DRAW_BLOCK]
            noise = rng.normal(size=(len(block), dim)) / np.sqrt(dim)
            out[start : start + len(block)] = unit_rows(self.centres[block] + spread * noise)
        return out


def exemplar_labels(count: int, labels: int) -> np.ndarray:
    """Label index of each of `count` exemplars, spread evenly over `labels` labels."""
    return np.arange(count) % min(labels, count)


def exact_top_labels(vectors: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """The k labels with the most similar exemplars (best first), by brute force over every vector."""
    similarities = vectors @ query
    depth = min(len(similarities), 64)
    while True:
        nearest = np.argpartition(-similarities, depth - 1)[:depth]
        ordered = labels[nearest[np.argsort(-similarities[nearest])]]
        distinct = list(dict.fromkeys(ordered.tolist()))
        if len(distinct) >= k or depth == len(similarities):
            return distinct[:k]
        depth = min(len(similarities), depth * 4)


def label_recall(found: list, exact: list, k: int) -> float:
    """|found ∩ exact| / k: label-level recall@k of a search against exact search."""
    return len(set(found[:k]) & set(exact[:k])) / k
