"""Section `rank`: the ranker's score mode against its generate mode, same model, image and candidates;
then score mode's variants side by side: candidates tokenised apart from the prompt (score mode before
joint tokenisation), jointly (now), and jointly in N candidate orders (`--permutations`, and N = k).

Generate mode's cost grows with the answer: its token budget is 8 per candidate (at least 64),
enough for a real model to write the whole list. A model with random weights never stops early,
so here it always spends the whole budget. Each variant's model calls per ranking are counted with
a forward hook: N orders should cost 2N calls (a prompt pass and one batched candidate pass each).
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
from rar_tools.ranking import RankerConfig, RankRequest

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
        ranker.config = replace(previous, max_new_tokens=token_budget(k), permutations=1)
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
        by_k[str(k)]["score_variants"] = variant_figures(ranker, previous, requests["score"], config, device)
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
    tables = [table, variants_table(ranker.name, device, config.repeats, by_k)]
    figures = {"ranker": ranker.name, "by_k": by_k, "gpu_peak_bytes": gpu_peak_bytes(device)}
    targets = []
    if "5" in by_k:
        targets.append(
            Target(
                "score mode speed-up over generate at k=5", by_k["5"]["generate_over_score"], SCORE_SPEEDUP, True, "x"
            )
        )
    return SectionResult("rank", tables, figures, targets)


def variants(previous: RankerConfig, k: int, permutations: tuple[int, ...]) -> dict[str, RankerConfig]:
    """Score mode's variants at `k` candidates: split and joint tokens, then joint in N orders."""
    orders = sorted({n for n in permutations if 1 < n < k} | {k})
    found = {"split": replace(previous, joint_tokens=False, permutations=1), "joint": replace(previous, permutations=1)}
    found.update({f"joint, {n} orders": replace(previous, permutations=n) for n in orders})
    return found


def variant_figures(ranker, previous: RankerConfig, request: RankRequest, config, device: str) -> dict:
    """p50/p95 per score-mode variant, timed in alternating rounds, and its model calls per ranking."""
    configs = variants(previous, len(request.candidates), config.permutations)

    def rank_with(name: str) -> None:
        ranker.config = configs[name]
        ranker.rank(request)

    calls = {name: model_calls(ranker, lambda name=name: rank_with(name)) for name in configs}
    seconds = time_rounds({name: lambda _, name=name: rank_with(name) for name in configs}, config.repeats, device)
    split_p50 = summarise(seconds["split"])["p50_ms"]
    found = {}
    for name in configs:
        timing = summarise(seconds[name])
        found[name] = {**timing, "model_calls": calls[name], "over_split": timing["p50_ms"] / split_p50}
    return found


def model_calls(ranker, call) -> int:
    """How many forward passes of the ranker's model one `call()` runs (counted by a forward hook)."""
    count = [0]
    hook = ranker.model.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        call()
    finally:
        hook.remove()
    return count[0]


def variants_table(name: str, device: str, repeats: int, by_k: dict) -> Table:
    """Score mode's variants side by side, per k."""
    rows = [
        [k, variant, f"{v['p50_ms']:.1f}", f"{v['p95_ms']:.1f}", f"{v['over_split']:.2f}", str(v["model_calls"])]
        for k, row in by_k.items()
        for variant, v in row["score_variants"].items()
    ]
    return Table(
        f"{name} on {device}, score mode variants, ms per ranking ({repeats} calls each, alternating)",
        ["k", "variant", "p50", "p95", "vs split", "model calls"],
        rows,
    )
