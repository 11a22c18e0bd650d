"""Regions per second: many boxes in one call (CLIP views batched) against one box per call.

    python examples/bench_regions.py                          # tiny random CLIP + Qwen2-VL, CPU
    python examples/bench_regions.py --stages retrieve --clip-model ViT-B-16 --clip-pretrained none
    python examples/bench_regions.py --json bench-results/regions.json

For each stage (`retrieve`: CLIP views + memory search; `recognize`: plus the MLLM ranking every
box), each number of views and each number of boxes, the same boxes of one 640 x 480 image are
recognised once in one call (`retrieve_regions` / `recognize_regions`) and once box by box
(`retrieve` / `recognize` with `box=`). The memory holds the LVIS vocabulary (1,203 label texts), so
regions are searched image-to-text as in RAR's detection setting. One warm-up each, then the two
ways alternate for `--repeats` rounds and the fastest run of each counts: on a shared machine the
fastest run is the one least disturbed by other work (the load average is printed with the table).
With the tiny models CLIP costs almost nothing, so the ratio mostly shows the per-call overhead
saved (decoding the image, building views); with a real-size CLIP the batched encoder pass is what
saves time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from rar_tools import RarTools, Settings
from rar_tools.label_lists import read_label_file, vocabularies
from rar_tools.testing.tiny_mllm import write_tiny_qwen2vl
from rar_tools.testing.tiny_models import write_tiny_clip

IMAGE_SIZE = (640, 480)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-model", help="open_clip model (default: a tiny random CLIP)")
    parser.add_argument("--clip-pretrained", default=None, help="weights tag for --clip-model ('none': random)")
    parser.add_argument("--ranker-model", help="MLLM id or folder (default: a tiny random Qwen2-VL)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stages", nargs="+", choices=["retrieve", "recognize"], default=["retrieve", "recognize"])
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 10, 50], help="boxes per image")
    parser.add_argument("--views", type=int, nargs="+", default=[1, 3], help="views per box")
    parser.add_argument("--k", type=int, default=5, help="candidates per box")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (the fastest counts)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def bench_image(work: Path) -> str:
    """A deterministic noise image written to a PNG file in `work`."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    path = work / "scene.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def bench_boxes(count: int, seed: int = 0) -> list[list[float]]:
    """`count` boxes of varied size and place inside the image."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        width, height = rng.integers(24, 260, size=2)
        x1, y1 = rng.integers(0, IMAGE_SIZE[0] - width), rng.integers(0, IMAGE_SIZE[1] - height)
        boxes.append([float(x1), float(y1), float(x1 + width), float(y1 + height)])
    return boxes


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def fastest_seconds(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """The fastest wall time of each of two calls, after a warm-up of each, alternating them."""
    first()
    second()
    times = [(seconds(first), seconds(second)) for _ in range(repeats)]
    return min(t[0] for t in times), min(t[1] for t in times)


def runners(tools: RarTools, stage: str, image: str, boxes: list, views: int, k: int):
    """(all boxes in one call, one call per box) for a stage."""
    if stage == "retrieve":
        return (
            lambda: tools.retrieve_regions("lvis", image, boxes, k, views=views),
            lambda: [tools.retrieve("lvis", image, k, box=box, views=views) for box in boxes],
        )
    return (
        lambda: tools.recognize_regions("lvis", image, boxes, k, views=views),
        lambda: [tools.recognize("lvis", image, k, box=box, views=views) for box in boxes],
    )


def bench(tools: RarTools, args: argparse.Namespace, work: Path) -> list[dict]:
    image = bench_image(work)
    rows = []
    for stage in args.stages:
        for views in args.views:
            for count in args.boxes:
                batched, single = runners(tools, stage, image, bench_boxes(count), views, args.k)
                batched_s, single_s = fastest_seconds(batched, single, args.repeats)
                rows.append(
                    {
                        "stage": stage,
                        "views": views,
                        "boxes": count,
                        "batched_regions_per_s": count / batched_s,
                        "single_regions_per_s": count / single_s,
                        "speed_up": single_s / batched_s,
                    }
                )
                print_row(rows[-1])
    return rows


def print_header() -> None:
    print(f"{'stage':<10} {'views':>5} {'boxes':>5} {'batched (reg/s)':>16} {'one by one (reg/s)':>19} {'ratio':>6}")


def print_row(row: dict) -> None:
    print(
        f"{row['stage']:<10} {row['views']:>5} {row['boxes']:>5} {row['batched_regions_per_s']:>16.1f} "
        f"{row['single_regions_per_s']:>19.1f} {row['speed_up']:>6.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rar-bench-regions-") as folder:  # removed afterwards
        return run(args, Path(folder))


def run(args: argparse.Namespace, work: Path) -> int:
    """The benchmark, with its models, memories and image in `work`."""
    clip_model = args.clip_model or f"local-dir:{write_tiny_clip(work / 'clip')}"
    ranker_model = args.ranker_model or str(write_tiny_qwen2vl(work / "mllm"))
    settings = Settings(
        data_dir=work / "memories",
        clip_model=clip_model,
        clip_pretrained=args.clip_pretrained,
        ranker_model=ranker_model,
        device=args.device,
        no_ranker="recognize" not in args.stages,
    )
    tools = RarTools(settings)
    rows = read_label_file(vocabularies()["lvis_v1"])
    tools.add_labels("lvis", [r[0] for r in rows])
    print(
        f"CLIP {args.clip_model or 'tiny random'}, ranker {args.ranker_model or 'tiny random Qwen2-VL'}, "
        f"device {tools.encoder.device}, k {args.k}, fastest of {args.repeats}, "
        f"image {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print_header()
    results = bench(tools, args, work)
    tools.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
