"""`rar-tools selfcheck [--device cuda]`: real-size models with random weights on a device, checked.

Writes, once, into a cache folder: CLIP ViT-B/16 and ViT-L/14 (open_clip `local-dir:` folders) and
Qwen2.5-VL-3B (bf16 on CUDA), all from their real configurations with random weights, so no download
is needed and every figure depends only on the architecture. Then it checks and prints:

* CLIP fp16 embeddings within cosine 0.999 of fp32, per model (`clip_checks.py`);
* images/s at batch 1 / 32 / 256 and peak GPU memory, per CLIP model;
* score mode's cached scores = uncached within the precision's own measured error; generate mode
  runs; ranking latency per mode at k = 5 and 20; the ranker's peak GPU memory (`ranker_checks.py`);
* a huge ranking request under a memory cap gives the clear out-of-memory error through the MCP
  server, and the server answers the next call (`oom_check.py`).

Exit status 1 when any check fails, else 0. Random weights: labels are meaningless, figures are not.
`--tiny` runs every check on the tiny test checkpoints (how the CPU tests exercise it).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from rar_tools.bench.checks import Check, guarded
from rar_tools.bench.clip_checks import clip_checks
from rar_tools.bench.config import RANDOM_QWEN25_VL_3B
from rar_tools.bench.context import random_clip_folder, ranker_folder
from rar_tools.bench.data import write_photos
from rar_tools.bench.oom_check import CapUnavailable, run_oom_case
from rar_tools.bench.ranker_checks import ranker_checks
from rar_tools.bench.report import environment, write_json
from rar_tools.bench.selfcheck_config import SelfcheckConfig
from rar_tools.devices import resolve_device
from rar_tools.errors import RarToolsError

log = logging.getLogger(__name__)


def photos(cache: Path, count: int) -> tuple[list[Path], list[Image.Image]]:
    """`count` photo-like JPEG files (written once) and their decoded RGB images."""
    paths = write_photos(cache / "photos", count, seed=0)
    return paths, [Image.open(path).convert("RGB") for path in paths]


def oom_check(tools, image: Path, device: str, headroom: int) -> list[Check]:
    name = "out of memory: clear error, server keeps serving"
    try:
        passed, detail, figures = run_oom_case(tools, str(image), device, headroom)
    except CapUnavailable as exc:
        return [Check(name, "skip", str(exc))]
    return [Check(name, "pass" if passed else "fail", detail, figures)]


def run_checks(config: SelfcheckConfig, echo: Callable[[str], None]) -> list[Check]:
    """Every check of `config` (resolved), each printed as it completes."""
    from rar_tools.api import RarTools
    from rar_tools.settings import Settings

    cache, device = config.cache_dir, config.device
    folders = {name: random_clip_folder(name, cache) for name in config.clip_models}
    paths, images = photos(cache, config.images)
    checks: list[Check] = []

    def add(found: list[Check]) -> None:
        checks.extend(found)
        for check in found:
            echo(check.line())

    for name, folder in folders.items():
        log.info("selfcheck: CLIP %s on %s", name, device)
        add(guarded(f"clip {name}", lambda f=folder, n=name: clip_checks(n, f, device, config.batch_sizes, images)))
    log.info("selfcheck: ranker %s on %s", config.ranker_model, device)
    ranker_dir = ranker_folder(config.ranker_model, cache, device)
    with tempfile.TemporaryDirectory(prefix="rar-selfcheck-") as data_dir:
        settings = Settings(
            data_dir=Path(data_dir), clip_model=next(iter(folders.values())), ranker_model=ranker_dir, device=device
        )
        tools = RarTools(settings)
        add(guarded("ranker", lambda: ranker_checks(tools, images[0], config.ks, config.repeats, device)))
        add(guarded("out of memory", lambda: oom_check(tools, paths[0], device, config.headroom)))
        tools.close()
    return checks


def run_selfcheck(config: SelfcheckConfig, echo: Callable[[str], None] = print) -> int:
    """Run the self-check; 1 when a check failed, else 0. Writes every check to `config.json_path`."""
    device = resolve_device(config.device)
    if not device.startswith("cuda") and not config.tiny and config.ranker_model == RANDOM_QWEN25_VL_3B:
        raise RarToolsError(
            f"selfcheck builds real-size models (a 3B ranker) and is meant for a GPU, but the device is {device}: "
            "pass --device cuda on a GPU machine, --tiny to run every check on the tiny checkpoints, or "
            "--ranker-model (tiny, or a model id / folder) to choose the ranker yourself"
        )
    config = config.resolved(device)
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    echo(f"rar-tools selfcheck on {device}; random checkpoints in {config.cache_dir}")
    checks = run_checks(config, echo)
    counts = {status: sum(c.status == status for c in checks) for status in ("pass", "fail", "skip", "measured")}
    echo(
        f"selfcheck: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped, "
        f"{counts['measured']} measured (random weights: figures are real, labels meaningless)"
    )
    if config.json_path:
        document: dict[str, Any] = {
            "config": asdict(config),
            "environment": environment(device),
            "checks": [asdict(c) for c in checks],
            "counts": counts,
        }
        write_json(config.json_path, document)
        echo(f"wrote {config.json_path}")
    return 1 if counts["fail"] else 0
