"""Section `describe`: `describe_regions` time per region, with the tight view only and with one context
view added. A model with random weights never stops early, so it always writes its whole token budget
(`--describe-max-new-tokens`): these are upper bounds for that budget."""

from __future__ import annotations

import logging

from rar_tools.bench.context import BenchContext
from rar_tools.bench.report import SectionResult, Table
from rar_tools.bench.timing import summarise, time_rounds
from rar_tools.images import load_image

log = logging.getLogger(__name__)
VIEWS = (1, 2)


def run(ctx: BenchContext) -> SectionResult:
    config, tools = ctx.config, ctx.tools
    photo = ctx.photos(1, seed=6)[0]
    width, height = load_image(photo).image.size
    box = [width / 4, height / 4, 3 * width / 4, 3 * height / 4]
    for views in VIEWS:
        tools.describe_regions(photo, [box], views=views)  # warm-up: loads the MLLM
    log.info("describe: %d calls per view count", config.repeats)
    calls = {views: lambda _, views=views: tools.describe_regions(photo, [box], views=views) for views in VIEWS}
    seconds = time_rounds(calls, config.repeats, ctx.device)
    by_views = {str(views): summarise(seconds[views]) for views in VIEWS}
    rows = [[str(v), f"{by_views[str(v)]['p50_ms']:.1f}", f"{by_views[str(v)]['p95_ms']:.1f}"] for v in VIEWS]
    budget = tools.settings.describe_max_new_tokens
    title = f"describe_regions with {tools.ranker.name} on {ctx.device}, ms per region (at most {budget} new tokens)"
    table = Table(title, ["views", "p50", "p95"], rows)
    return SectionResult("describe", [table], {"by_views": by_views, "max_new_tokens": budget})
