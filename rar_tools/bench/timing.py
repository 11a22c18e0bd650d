"""Timing helpers: wall-clock calls with device synchronisation, and their percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timing covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call, synchronised on `device`."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def time_calls(fn: Callable[[], Any], repeats: int, device: str = "cpu", warmup: int = 1) -> list[float]:
    """Seconds of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return [timed(fn, device)[0] for _ in range(repeats)]


def time_rounds(calls: dict[str, Callable[[int], Any]], rounds: int, device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of each call (given the round number) in each of `rounds` rounds. The order rotates
    every round, so that drift in the machine's load reaches every call alike."""
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(timed(partial(calls[name], index), device)[0])
    return seconds


def summarise(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, mean and min of a list of durations, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"), "min_ms": float("nan")}
    return {
        "n": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }


def gpu_peak_bytes(device: str) -> int | None:
    """Peak GPU memory allocated by torch since the last reset, or None off CUDA."""
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


def reset_gpu_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
