"""What `rar-tools selfcheck` builds and checks, and its flags. Light to import: no model library."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

from rar_tools.bench.config import RANDOM_QWEN25_VL_3B, TINY_RANKER, dataclass_from, positive

CLIP_MODELS = ("ViT-B-16", "ViT-L-14")
TINY = TINY_RANKER
GPU_HEADROOM = 2 * 2**30  # bytes the out-of-memory case leaves above what the process holds
CPU_HEADROOM = 32 * 2**20


def default_cache() -> Path:
    """Where the random checkpoints are written once: `$XDG_CACHE_HOME/rar-tools/selfcheck`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rar-tools" / "selfcheck"


@dataclass(frozen=True)
class SelfcheckConfig:
    """The models and sizes of one self-check. `tiny` swaps in the tiny test checkpoints and small
    sizes (how the tests run every check on a CPU)."""

    device: str = "auto"
    cache_dir: Path | None = None
    clip_models: tuple[str, ...] = CLIP_MODELS
    ranker_model: str = RANDOM_QWEN25_VL_3B
    batch_sizes: tuple[int, ...] = (1, 32, 256)
    ks: tuple[int, ...] = (5, 20)
    repeats: int = 5
    headroom: int | None = None
    json_path: Path | None = None
    tiny: bool = False

    def resolved(self, device: str) -> SelfcheckConfig:
        """The device resolved, the cache folder set, and the tiny sizes applied when asked for."""
        config = replace(self, device=device, cache_dir=self.cache_dir or default_cache())
        if self.tiny:
            config = replace(config, clip_models=(TINY,), ranker_model=TINY, batch_sizes=(1, 4), repeats=2)
        headroom = self.headroom or (GPU_HEADROOM if device.startswith("cuda") else CPU_HEADROOM)
        return replace(config, headroom=headroom)

    @property
    def images(self) -> int:
        """Images per throughput figure: two batches of the largest size, at least 8."""
        return max(8, 2 * max(self.batch_sizes))


def add_selfcheck_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rar-tools selfcheck` flags."""
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or mps (the check is meant for cuda)")
    parser.add_argument(
        "--cache-dir", type=Path, help="where the random checkpoints are written once (~/.cache/rar-tools/selfcheck)"
    )
    parser.add_argument(
        "--clip-models", nargs="+", default=list(CLIP_MODELS), help="open_clip architectures, random weights"
    )
    parser.add_argument(
        "--ranker-model",
        default=RANDOM_QWEN25_VL_3B,
        help=f"'{RANDOM_QWEN25_VL_3B}' (real size, random weights), '{TINY}' or a transformers model id / folder",
    )
    parser.add_argument("--batch-sizes", type=positive, nargs="+", default=[1, 32, 256], help="CLIP batch sizes")
    parser.add_argument("--ks", type=positive, nargs="+", default=[5, 20], help="candidate counts for ranking latency")
    parser.add_argument("--repeats", type=positive, default=5, help="timed calls per latency figure")
    parser.add_argument(
        "--headroom", type=positive, help="bytes above the current use allowed in the out-of-memory case"
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="write every check and figure here")
    parser.add_argument("--tiny", action="store_true", help="the tiny test checkpoints and small sizes (CPU tests)")


def selfcheck_config_from(args: argparse.Namespace) -> SelfcheckConfig:
    """A `SelfcheckConfig` from parsed `rar-tools selfcheck` flags."""
    return dataclass_from(args, SelfcheckConfig, ("clip_models", "batch_sizes", "ks"))
