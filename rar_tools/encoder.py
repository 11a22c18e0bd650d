"""The CLIP encoder: images and label texts to L2-normalised float32 embeddings (open_clip)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from rar_tools.devices import resolve_device
from rar_tools.errors import ModelLoadError
from rar_tools.identity import EncoderIdentity
from rar_tools.threads import use_threads

log = logging.getLogger(__name__)

SINGLE_TEMPLATE = "a photo of a {}."
PREPROCESS_THREADS = min(8, os.cpu_count() or 1)


def label_templates(kind: str) -> list[Callable[[str], str]]:
    """Prompt templates for label texts: one, or open_clip's small ImageNet ensemble plus the one."""
    single = [SINGLE_TEMPLATE.format]
    if kind == "single":
        return single
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return single + list(SIMPLE_IMAGENET_TEMPLATES)


class ClipEncoder:
    """A loaded open_clip model with its preprocessing and tokenizer. Thread-safe: the model and
    tokenizer run under one lock (one call at a time).

    Images are preprocessed outside that lock by a small thread pool (Pillow and torch release the
    GIL), and the next batch is prepared while the model encodes the current one.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        identity: EncoderIdentity,
        device: str,
        batch_size: int = 32,
        templates: str = "single",
        preprocess_workers: int = PREPROCESS_THREADS,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.batch_size = batch_size
        self.templates = templates
        self.dtype = input_dtype(model)
        self.threads: int | None = None  # torch threads per call (None: leave torch's setting alone)
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(preprocess_workers, thread_name_prefix="clip-preprocess")
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="clip-prefetch")

    @property
    def dim(self) -> int:
        return self.identity.dim

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) unit-norm float32 embeddings, computed in batches of `batch_size`."""
        batches = [images[start : start + self.batch_size] for start in range(0, len(images), self.batch_size)]
        chunks = []
        upcoming: Future | None = self._prefetch.submit(self.pixels, batches[0]) if batches else None
        for index in range(len(batches)):
            pixels = upcoming.result()
            upcoming = self._prefetch.submit(self.pixels, batches[index + 1]) if index + 1 < len(batches) else None
            with self._lock, torch.inference_mode():
                use_threads(self.threads)
                features = self.model.encode_image(pixels.to(self.device, self.dtype))
            chunks.append(normalise(features))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's input tensor for `images`, preprocessed in parallel."""
        return torch.stack(list(self._workers.map(self._preprocess_one, images)))

    def _preprocess_one(self, image: Image.Image) -> torch.Tensor:
        """One image preprocessed in a pool worker, whose torch operations run on one thread: the
        pool's parallelism is its workers, not torch threads on top of the model's."""
        use_threads(1)
        return self.preprocess(image)

    @contextmanager
    def exclusive(self) -> Iterator[torch.nn.Module]:
        """The model, held for one caller alone (a pass with gradients and hooks, as Grad-CAM's)."""
        with self._lock:
            yield self.model

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit-norm float32 embeddings of raw texts."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            with self._lock, torch.inference_mode():  # HF tokenizers are not safe to share across threads
                use_threads(self.threads)
                tokens = self.tokenizer(list(texts[start : start + self.batch_size]))
                features = self.model.encode_text(tokens.to(self.device))
            chunks.append(normalise(features))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_labels(self, labels: Sequence[str]) -> np.ndarray:
        """Label embeddings through the prompt templates: the normalised mean over templates."""
        templates = label_templates(self.templates)
        prompts = [template(label) for label in labels for template in templates]
        per_prompt = self.encode_texts(prompts).reshape(len(labels), len(templates), -1)
        mean = per_prompt.mean(axis=1)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype pixels must have: that of the image tower's first convolution or linear layer.

    Reduced precision converts only those layers' weights (embeddings and norms stay float32), so
    the first parameter's dtype is not the one to feed."""
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    first = next((m for m in getattr(model, "visual", model).modules() if isinstance(m, layers)), None)
    return first.weight.dtype if first is not None else torch.float32


def resolve_precision(precision: str, device: str) -> str:
    """`auto`: float16 on CUDA, float32 elsewhere; otherwise the named precision."""
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ModelLoadError(f"unknown CLIP precision {precision!r}: use auto, fp32, bf16 or fp16")
    return precision


def normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32)


def create_encoder(
    model_name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    device: str = "auto",
    batch_size: int = 32,
    templates: str = "single",
    precision: str = "auto",
    preprocess_workers: int = PREPROCESS_THREADS,
) -> ClipEncoder:
    """Load an open_clip model by name + weights tag/file, `hf-hub:` id or `local-dir:` folder.

    `precision` auto is float16 on CUDA and float32 elsewhere; bf16 is several times faster on CPUs
    with native bfloat16 (AVX512-BF16, AMX). `pretrained=None` or 'none' gives random weights
    (benchmarks only). `preprocess_workers` threads prepare images while the model runs.
    """
    import open_clip

    device = resolve_device(device)
    has_schema = model_name.startswith(("hf-hub:", "local-dir:"))
    tag = None if (has_schema or pretrained in (None, "", "none")) else pretrained
    precision = resolve_precision(precision, device)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=tag, device=device, precision=precision
        )
        tokenizer = open_clip.get_tokenizer(model_name)
    except torch.cuda.OutOfMemoryError as exc:
        raise ModelLoadError(f"not enough GPU memory to load CLIP model {model_name!r}; try --device cpu") from exc
    except Exception as exc:  # open_clip raises many types for a bad name, path or offline cache
        raise ModelLoadError(
            f"could not load CLIP model {model_name!r} (weights {tag or 'from the model folder'}): {exc}. "
            "Offline, pre-download the weights or use local-dir:/path/to/folder."
        ) from exc
    model.eval()
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["x"]).to(device)).shape[-1])
    weights = "model-folder" if has_schema else (tag or "random-init")
    identity = EncoderIdentity(model=model_name, pretrained=weights, dim=dim)
    log.info("CLIP encoder %s loaded on %s", identity.describe(), device)
    return ClipEncoder(model, preprocess, tokenizer, identity, device, batch_size, templates, preprocess_workers)
