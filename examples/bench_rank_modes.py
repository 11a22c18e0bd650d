"""Time the local ranker's score mode against its generate mode on one model, image and candidate set.

    python examples/bench_rank_modes.py                       # tiny random Qwen2-VL, CPU
    python examples/bench_rank_modes.py --model Qwen/Qwen2.5-VL-3B-Instruct --device cuda --json out.json

Each mode runs once to warm up, then `--repeats` times; the table shows medians. Generate mode's cost
grows with the answer's length: the token budget is `--max-new-tokens`, by default 8 per candidate
(at least 64), enough for a real model to write the whole list. A random tiny model never stops
early, so on it generate mode always spends the full budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import TransformersRanker
from rar_tools.testing.tiny_mllm import NAMES, write_tiny_qwen2vl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF id or local folder (default: a tiny random Qwen2-VL)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 20], help="candidate counts")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode and k")
    parser.add_argument(
        "--max-new-tokens", type=int, default=0, help="generate-mode budget (0: 8 per candidate, at least 64)"
    )
    parser.add_argument("--image-side", type=int, default=448, help="side of the test image")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def bench_image(side: int) -> Image.Image:
    """A deterministic 4:3 noise image."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(side * 3 // 4, side, 3), dtype=np.uint8))


def median_seconds(ranker: TransformersRanker, request: RankRequest, repeats: int) -> float:
    """Median wall time of `ranker.rank(request)` after one warm-up call."""
    ranker.rank(request)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ranker.rank(request)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(model: str, args: argparse.Namespace) -> dict:
    """Score and generate medians for each k, on one loaded model."""
    rows = []
    image = bench_image(args.image_side)
    ranker = TransformersRanker(RankerConfig(model=model, device=args.device))
    for k in args.ks:
        budget = args.max_new_tokens or max(64, 8 * k)
        ranker.config = replace(ranker.config, max_new_tokens=budget)
        request = RankRequest(image=image, candidates=tuple(NAMES[:k]))
        score_s = median_seconds(ranker, request, args.repeats)
        generate_s = median_seconds(ranker, RankRequest(image, request.candidates, mode="generate"), args.repeats)
        rows.append(
            {
                "k": k,
                "score_s": score_s,
                "generate_s": generate_s,
                "ratio": generate_s / score_s,
                "max_new_tokens": budget,
            }
        )
    return {"model": model, "device": ranker.device, "repeats": args.repeats, "rows": rows}


def print_table(result: dict) -> None:
    print(f"model {result['model']}  device {result['device']}  median of {result['repeats']}")
    print(f"{'k':>4} {'score (s)':>10} {'generate (s)':>13} {'gen/score':>10} {'max_new_tokens':>15}")
    for row in result["rows"]:
        print(
            f"{row['k']:>4} {row['score_s']:>10.4f} {row['generate_s']:>13.4f} "
            f"{row['ratio']:>10.1f} {row['max_new_tokens']:>15}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if max(args.ks) > len(NAMES):
        print(f"k is at most {len(NAMES)} here", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_tiny_qwen2vl(Path(tmp) / "tiny-qwen2vl"))
        result = bench(model, args)
    if args.model is None:
        result["model"] = "tiny random Qwen2-VL (rar_tools.testing.tiny_mllm)"
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
