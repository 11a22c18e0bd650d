"""The self-check's ranker part: generate mode runs, latency per mode and k, peak GPU memory, and score
mode's cached scores against uncached ones.

Cached = uncached tolerance. The KV-cached batched pass and the full forward pass compute the same
scores through different kernels and reduction orders; in bf16 each differs from the exact value by
up to the rounding error bf16 puts into a score. That error is measured, not assumed: the uncached
scores are computed again with the model in float32 (an exact upcast of the same weights), and
`noise` = max |uncached(bf16) - uncached(float32)|. Two bf16 results that each carry at most that
error differ by at most twice it, so the check is |cached - uncached| <= 2 x noise + 1e-3 nats (the
1e-3 floor covers float32 rounding across a deep model; the tiny CPU tests hold 1e-4). A wrong
position or cache continuation shifts scores by far more than rounding (the tests show it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from rar_tools.bench.checks import Check, measured
from rar_tools.bench.clip_checks import peak_memory_check
from rar_tools.bench.data import LABEL_NAMES
from rar_tools.bench.rank import token_budget
from rar_tools.bench.timing import reset_gpu_peak, summarise, time_calls
from rar_tools.ranking import RankRequest

AGREEMENT_FLOOR = 1e-3
AGREEMENT_K = 5


def ranker_checks(tools, image: Image.Image, ks: tuple[int, ...], repeats: int, device: str) -> list[Check]:
    """Load the ranker, run generate mode, time both modes, report memory, then check score agreement."""
    reset_gpu_peak(device)
    ranker = tools.ranker
    request = RankRequest(image, tuple(LABEL_NAMES[:AGREEMENT_K]))
    checks = [
        generate_check(ranker, replace(request, mode="generate")),
        latency_check(ranker, image, ks, repeats, device),
    ]
    checks.append(peak_memory_check(f"ranker {dtype_name(ranker.model.dtype)}", device))
    checks.append(score_agreement(ranker, request))
    return checks


def dtype_name(dtype: torch.dtype) -> str:
    """`bfloat16` for torch.bfloat16."""
    return str(dtype).removeprefix("torch.")


def generate_check(ranker, request: RankRequest) -> Check:
    """Generate mode decodes, parses and returns every candidate once."""
    result = ranker.rank(request)
    every_once = sorted(r.label for r in result.ranked) == sorted(request.candidates)
    detail = (
        f"{len(result.ranked)} candidates ranked in {result.timings.get('total_s', 0.0):.2f} s, "
        f"fallback {result.fallback} (random weights write no list)"
    )
    return Check(f"ranker generate mode runs (k={len(request.candidates)})", "pass" if every_once else "fail", detail)


def latency_check(ranker, image: Image.Image, ks: tuple[int, ...], repeats: int, device: str) -> Check:
    """Median ms per ranking call in each mode at each k (generate: 8 tokens per candidate, at least 64)."""
    previous, figures = ranker.config, {}
    try:
        for k in ks:
            ranker.config = replace(previous, max_new_tokens=token_budget(k))
            for mode in ("score", "generate"):
                request = RankRequest(image, tuple(LABEL_NAMES[:k]), mode=mode)
                figures[f"{mode} k={k}"] = summarise(time_calls(lambda r=request: ranker.rank(r), repeats, device))
    finally:
        ranker.config = previous
    listed = ", ".join(f"{name} {f['p50_ms']:.0f}" for name, f in figures.items())
    return measured("ranker latency, p50 ms per call", f"{listed} ({repeats} calls each)", figures)


def score_agreement(ranker, request: RankRequest) -> Check:
    """Cached scores against uncached ones, within twice the served precision's own error (module doc)."""
    served = ranker.model.dtype
    cached = np.array(ranker.candidate_scores(request))
    uncached = np.array(ranker.score_without_cache(request))
    noise = 0.0
    if served != torch.float32:
        ranker.model.float()
        try:
            noise = float(np.abs(uncached - np.array(ranker.score_without_cache(request))).max())
        finally:
            ranker.model.to(served)
    gap = float(np.abs(cached - uncached).max())
    tolerance = 2 * noise + AGREEMENT_FLOOR
    allowance = (
        f"2 x {noise:.2e} (the {dtype_name(served)} error of the uncached scores against float32) + {AGREEMENT_FLOOR:g}"
        if served != torch.float32
        else f"{AGREEMENT_FLOOR:g} (float32 rounding)"
    )
    detail = (
        f"max |cached - uncached| = {gap:.2e} nats over {len(cached)} candidates in {dtype_name(served)}; "
        f"tolerance {allowance}"
    )
    figures = {
        "gap": gap,
        "noise": noise,
        "tolerance": tolerance,
        "cached": cached.tolist(),
        "uncached": uncached.tolist(),
    }
    return Check("ranker score mode: cached = uncached", "pass" if gap <= tolerance else "fail", detail, figures)
