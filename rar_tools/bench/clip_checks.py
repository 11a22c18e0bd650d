"""The self-check's CLIP part: fp16 against fp32 embeddings, images/s per batch size, peak GPU memory.

Each model is a real-size open_clip architecture with random weights, loaded from its `local-dir:`
folder like downloaded weights, once in float32 and once in float16 (the same weights). Embeddings
of photo-like images must agree within cosine 0.999; throughput and peak memory are measured with
the precision the server uses on the device (`--clip-precision auto`: fp16 on CUDA, fp32 elsewhere).
"""

from __future__ import annotations

import gc

import numpy as np
import torch
from PIL import Image

from rar_tools.bench.checks import Check, measured
from rar_tools.bench.timing import gpu_peak_bytes, reset_gpu_peak, timed
from rar_tools.encoder import ClipEncoder, create_encoder, resolve_precision

COSINE_BOUND = 0.999
COSINE_IMAGES = 8


def load_clip(folder: str, device: str, precision: str) -> ClipEncoder:
    return create_encoder(folder, None, device, precision=precision)


def free_memory(device: str) -> None:
    """Give the memory of dropped models back (to the GPU driver on CUDA)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def images_per_second(encoder: ClipEncoder, images: list[Image.Image], batch: int, device: str) -> float:
    """End-to-end images/s (preprocessing included) encoding `images` in batches of `batch`."""
    encoder.batch_size = batch
    encoder.encode_images(images[:batch])  # warm-up: kernels chosen, buffers allocated
    seconds, _ = timed(lambda: encoder.encode_images(images), device)
    return len(images) / seconds


def precision_check(name: str, reference: np.ndarray, low: np.ndarray) -> Check:
    """fp16 embeddings against fp32 ones of the same images: every cosine at least `COSINE_BOUND`."""
    cosines = (reference * low).sum(axis=1)
    worst = float(cosines.min())
    return Check(
        f"clip {name}: fp16 embeddings within cosine {COSINE_BOUND} of fp32",
        "pass" if worst >= COSINE_BOUND else "fail",
        f"lowest cosine {worst:.6f} over {len(cosines)} images",
        {"cosines": cosines.tolist()},
    )


def clip_checks(
    name: str,
    folder: str,
    device: str,
    batch_sizes: tuple[int, ...],
    images: list[Image.Image],
    cosine_images: int = COSINE_IMAGES,
) -> list[Check]:
    """The precision check on `cosine_images` images, then throughput and peak memory of the served
    precision."""
    served_precision = resolve_precision("auto", device)
    fp32 = load_clip(folder, device, "fp32")
    reference = fp32.encode_images(images[:cosine_images])
    if served_precision != "fp32":
        fp32 = None
        free_memory(device)
    reset_gpu_peak(device)
    fp16 = load_clip(folder, device, "fp16")
    checks = [precision_check(name, reference, fp16.encode_images(images[:cosine_images]))]
    served = fp16 if served_precision == "fp16" else fp32
    fp16 = fp32 = None
    free_memory(device)
    rates = {str(b): images_per_second(served, images, b, device) for b in batch_sizes}
    listed = ", ".join(f"{rate:.1f} at batch {b}" for b, rate in rates.items())
    checks.append(measured(f"clip {name} {served_precision}: images/s", f"{listed} ({len(images)} images)", rates))
    checks.append(peak_memory_check(f"clip {name} {served_precision}", device))
    served = None
    free_memory(device)
    return checks


def peak_memory_check(what: str, device: str) -> Check:
    """The peak GPU memory torch allocated since the last reset (skipped off CUDA)."""
    peak = gpu_peak_bytes(device)
    if peak is None:
        return Check(f"{what}: peak GPU memory", "skip", f"not measured on {device}")
    return measured(f"{what}: peak GPU memory", f"{peak / 2**30:.2f} GiB", {"peak_bytes": peak})
