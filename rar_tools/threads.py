"""How many CPU threads torch uses for each model (`--threads`), and the preprocessing pool's size.

The default, when `--threads` is unset, is chosen per model when it has loaded: **1** for a small
model (under `SMALL_MODEL_PARAMETERS`, such as the tiny test checkpoints), whose operations are too
small to split, so that extra threads only wait on each other; otherwise **one per available CPU
core, at most `MAX_DEFAULT_THREADS`**. `--threads N` sets every model to N.

On a machine shared with other work, a thread that waits for a descheduled partner wastes its time
slice spinning: the tiny ranker on 2 threads beside other jobs took 600 ms per ranking instead of
9-28 ms. `rar-tools bench --sections threads` measures 1, 2 and the default count with and without a
competing load; set `--threads` from what it shows on your machine.

torch keeps its thread count per OS thread (OpenMP), so each model sets its count in the thread that
calls it, right before its computation (`use_threads`). The image preprocessing pool has half as many
workers as the thread budget, each running torch on one thread. Light to import: only `use_threads`
imports torch.
"""

from __future__ import annotations

import os

SMALL_MODEL_PARAMETERS = 20_000_000
MAX_DEFAULT_THREADS = 8
MAX_PREPROCESS_WORKERS = 8


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parameter_count(module: object) -> int:
    """The parameters of a torch module (0 for anything else, such as a remote ranker)."""
    parameters = getattr(module, "parameters", None)
    return sum(p.numel() for p in parameters()) if callable(parameters) else 0


def default_threads(parameters: int, cores: int) -> int:
    """1 for a small model (under `SMALL_MODEL_PARAMETERS`), else one thread per core up to
    `MAX_DEFAULT_THREADS`."""
    if parameters < SMALL_MODEL_PARAMETERS:
        return 1
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def preprocess_workers(threads: int) -> int:
    """Image preprocessing workers beside a model on `threads` threads: half as many (at least one),
    each running torch on one thread, so that the pool and the model together stay within budget."""
    return max(1, min(MAX_PREPROCESS_WORKERS, threads // 2))


def use_threads(count: int | None) -> None:
    """Run this OS thread's torch operations on `count` threads (None: leave them as they are)."""
    if count is None:
        return
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
