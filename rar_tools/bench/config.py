"""What a benchmark run measures, and the `rar-tools bench` flags that set it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

SECTIONS = ("encode", "add", "retrieve", "rank", "e2e", "threads")
OPTIONAL_SECTIONS = ("segment", "describe")  # run only when named in --sections
TINY_RANKER = "tiny"
RANDOM_QWEN25_VL_3B = "random-qwen2.5-vl-3b"
HNSW_KEYS = ("space", "ef_construction", "ef_search", "max_neighbors")
T = TypeVar("T")


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and models of one run. `None` sizes take the device's default (`resolved`)."""

    sections: tuple[str, ...] = SECTIONS
    clip_model: str = "ViT-B-16"
    clip_pretrained: str = "none"
    clip_precision: str = "auto"
    ranker_model: str | None = None
    device: str = "auto"
    repeats: int = 20
    encode_images: int | None = None
    batch_sizes: tuple[int, ...] | None = None
    text_labels: int = 128
    add_images: int | None = None
    sizes: tuple[int, ...] = (1000, 10000, 100000)
    labels: int = 1000
    queries: int = 200
    ks: tuple[int, ...] = (5, 20)
    permutations: tuple[int, ...] = (3,)
    e2e_images: int = 8
    hnsw: tuple[tuple[str, int | str], ...] = ()
    chroma_url: str | None = None
    json_path: Path | None = None
    work_dir: Path | None = None
    seed: int = 0
    segment_labels: tuple[int, ...] = (1, 10, 100)
    segment_images: int = 3

    def resolved(self, device: str) -> BenchConfig:
        """Defaults that keep a full CPU run near 15 minutes, and GPU runs at the sizes that matter there."""
        gpu = device.startswith("cuda")
        return replace(
            self,
            device=device,
            ranker_model=self.ranker_model or (RANDOM_QWEN25_VL_3B if gpu else TINY_RANKER),
            encode_images=self.encode_images or (1024 if gpu else 64),
            batch_sizes=self.batch_sizes or ((1, 32, 256) if gpu else (1, 4, 32)),
            add_images=self.add_images or (1000 if gpu else 256),
        )


def positive(text: str) -> int:
    """An integer of at least 1, for argparse."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def hnsw_setting(text: str) -> tuple[str, int | str]:
    """`KEY=VALUE` for Chroma's HNSW configuration; numbers become ints."""
    key, sep, value = text.partition("=")
    if not sep or key not in HNSW_KEYS:
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE with KEY one of {', '.join(HNSW_KEYS)}")
    return key, int(value) if value.isdigit() else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rar-tools bench` flags."""
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS + OPTIONAL_SECTIONS,
        default=list(SECTIONS),
        help=f"what to measure (default: {' '.join(SECTIONS)}; also {' '.join(OPTIONAL_SECTIONS)})",
    )
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip model name, hf-hub: or local-dir:")
    parser.add_argument(
        "--clip-pretrained", default="none", help="weights tag; 'none' (default): random init, same speed"
    )
    parser.add_argument(
        "--clip-precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="CLIP weights: auto (fp16 on CUDA, else fp32)",
    )
    parser.add_argument(
        "--ranker-model",
        help=f"'{TINY_RANKER}' (tiny random Qwen2-VL, the CPU default), '{RANDOM_QWEN25_VL_3B}' (real-size, "
        "random weights, the CUDA default) or a transformers model id / folder",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--repeats", type=positive, default=20, help="timed calls per latency figure")
    parser.add_argument("--encode-images", type=positive, help="images per encoding figure (CPU 64, CUDA 1024)")
    parser.add_argument(
        "--batch-sizes", type=positive, nargs="+", help="encoder batch sizes (CPU 1 4 32, CUDA 1 32 256)"
    )
    parser.add_argument("--text-labels", type=positive, default=128, help="label texts for the text-encoding figure")
    parser.add_argument("--add-images", type=positive, help="images added to memory (CPU 256, CUDA 1000)")
    parser.add_argument(
        "--chroma-url", help="run the retrieve section on a Chroma server (chroma run) instead of the embedded store"
    )
    parser.add_argument("--sizes", type=positive, nargs="+", default=[1000, 10000, 100000], help="memory sizes")
    parser.add_argument("--labels", type=positive, default=1000, help="labels the retrieval memories are spread over")
    parser.add_argument("--queries", type=positive, default=200, help="retrieval queries per memory size")
    parser.add_argument("--ks", type=positive, nargs="+", default=[5, 20], help="candidate counts")
    parser.add_argument(
        "--permutations",
        type=positive,
        nargs="+",
        default=[3],
        help="candidate orders timed in score mode besides N = k (rank section; default 3)",
    )
    parser.add_argument("--e2e-images", type=positive, default=8, help="exemplars in the end-to-end memory")
    parser.add_argument(
        "--hnsw",
        nargs="+",
        type=hnsw_setting,
        default=[],
        metavar="KEY=VALUE",
        help="HNSW settings of the retrieval memories, e.g. max_neighbors=64 ef_search=256 "
        "(default: rar_tools.memory.HNSW_CONFIG)",
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="write every figure here")
    parser.add_argument("--work-dir", type=Path, help="keep benchmark data here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--segment-labels", type=positive, nargs="+", default=[1, 10, 100], help="label counts of the segment section"
    )
    parser.add_argument("--segment-images", type=positive, default=3, help="images per label count (segment)")


def config_from(args: argparse.Namespace) -> BenchConfig:
    """A `BenchConfig` from parsed `rar-tools bench` flags."""
    return dataclass_from(
        args, BenchConfig, ("sections", "batch_sizes", "sizes", "ks", "permutations", "hnsw", "segment_labels")
    )


def dataclass_from(args: argparse.Namespace, cls: type[T], tuples: tuple[str, ...]) -> T:
    """`cls` built from the parsed flags named like its fields; list flags in `tuples` become tuples."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    for name in tuples:
        if given.get(name) is not None:
            given[name] = tuple(given[name])
    return cls(**given)
