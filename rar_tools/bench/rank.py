"""Section `rank`: the ranker's score mode against its generate mode, same model, image and candidates.

Generate mode's cost grows with the answer: its token budget is 8 per candidate (at least 64),
enough for a real model to write the whole list. A model with random weights never stops early,
so here it always spends the whole budget.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from rar_tools.bench.context import BenchContext
from rar_tools.bench.data import LABEL_NAMES
from rar_tools.bench.report import SectionResult, Table, Target
from rar_tools.bench.timing import gpu_peak_bytes, reset_gpu_peak, summarise, time_rounds
from rar_tools.errors import RarToolsError
from rar_tools.images import load_image
from rar_tools.ranking import RankRequest

log = logging.getLogger(__name__)
SCORE_SPEEDUP = 5.0


def token_budget(k: int) -> int:
    return max(64, 8 * k)


def run(ctx: BenchContext) -> SectionResult:
    config, device = ctx.config, ctx.device
    ranker = ctx.tools.ranker
    image = load_image(ctx.photos(1, seed=3)[0]).image
    reset_gpu_peak(device)
    rows, by_k = [], {}
    previous = ranker.config
    for k in config.ks:
        if k > len(LABEL_NAMES):
            raise RarToolsError(f"k={k}: the rank benchmark has {len(LABEL_NAMES)} candidate names")
        ranker.config = replace(previous, max_new_tokens=token_budget(k))
        requests = {mode: RankRequest(image, tuple(LABEL_NAMES[:k]), mode=mode) for mode in ("score", "generate")}
        log.info("rank: k=%d, score and generate mode", k)
        for mode, warmup in (("score", 3), ("generate", 2)):
            for _ in range(warmup):
                ranker.rank(requests[mode])
        calls = {mode: lambda _, request=request: ranker.rank(request) for mode, request in requests.items()}
        seconds = time_rounds(calls, config.repeats, device)
        score, generate = summarise(seconds["score"]), summarise(seconds["generate"])
        ratio = generate["p50_ms"] / score["p50_ms"]
        by_k[str(k)] = {
            "score": score,
            "generate": generate,
            "generate_over_score": ratio,
            "max_new_tokens": token_budget(k),
        }
        rows.append(
            [
                str(k),
                f"{score['p50_ms']:.1f}",
                f"{score['p95_ms']:.1f}",
                f"{generate['p50_ms']:.1f}",
                f"{generate['p95_ms']:.1f}",
                f"{ratio:.1f}",
                str(token_budget(k)),
            ]
        )
    ranker.config = previous
    table = Table(
        f"{ranker.name} on {device}, ms per ranking ({config.repeats} calls per mode, alternating, after warm-up)",
        ["k", "score p50", "score p95", "generate p50", "generate p95", "gen/score", "max_new_tokens"],
        rows,
    )
    figures = {"ranker": ranker.name, "by_k": by_k, "gpu_peak_bytes": gpu_peak_bytes(device)}
    targets = []
    if "5" in by_k:
        targets.append(
            Target(
                "score mode speed-up over generate at k=5", by_k["5"]["generate_over_score"], SCORE_SPEEDUP, True, "x"
            )
        )
    return SectionResult("rank", [table], figures, targets)
