"""The Python API without MCP: build a memory, retrieve, rank, recognise.

    python examples/python_api.py                # tiny random models written to a temp dir (offline)
    python examples/python_api.py --real         # ViT-B-16 (OpenAI) + Qwen2.5-VL-3B from your HF cache

With the tiny random models the labels are meaningless; the mechanics are the real ones.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from rar_tools import RarTools, Settings
from rar_tools.testing.tiny_models import write_tiny_models


def synthetic_photos(folder: Path) -> dict[str, list[str]]:
    """A few noisy single-colour 'photos' per label, written as PNG files."""
    rng = np.random.default_rng(0)
    photos: dict[str, list[str]] = {}
    for label, rgb in {"cardinal": (200, 30, 30), "blue jay": (40, 70, 210), "goldfinch": (230, 210, 40)}.items():
        for n in range(3):
            pixels = np.clip(np.array(rgb) + rng.integers(-30, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{label.replace(' ', '_')}_{n}.png"
            Image.fromarray(pixels).save(path)
            photos.setdefault(label, []).append(str(path))
    return photos


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="use the default real models (needs their weights)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rar-example-") as folder:  # removed afterwards
        run(Path(folder), args.real)


def run(work: Path, real: bool) -> None:
    """The whole flow, with its memories (and the tiny models unless `real`) in `work`."""
    if real:
        settings = Settings(data_dir=work / "memories")
    else:
        models = write_tiny_models(work / "models")
        settings = Settings(
            data_dir=work / "memories",
            clip_model=f"local-dir:{models['clip']}",
            ranker_model=str(models["mllm"]),
            detector_model=str(models["detector"]),
        )
    tools = RarTools(settings)
    photos = synthetic_photos(work)

    for label, paths in photos.items():
        print(tools.add_images("birds", paths[:2], label).message)
    print(tools.add_labels("birds", ["cardinal", "blue jay", "goldfinch", "house sparrow"]).message)

    query = photos["blue jay"][2]
    retrieved = tools.retrieve("birds", query, k=3)
    print("retrieved:", [(c.label, round(c.score, 3)) for c in retrieved.candidates])

    ranked = tools.rank(query, [c.label for c in retrieved.candidates], mode="score")
    print("ranked:", [(c.label, round(c.score, 3)) for c in ranked.ranked])

    result = tools.recognize("birds", query, k=3, mode="generate")
    print("recognised:", result.label, "| fallback:", result.ranking.fallback if result.ranking else None)
    region = tools.recognize("birds", query, k=3, box=[10, 10, 80, 80], views=3, min_confidence=0.5)
    print("region:", region.label, "| finest level at p >= 0.5:", region.levels.answer)
    boxes = [d.box for d in tools.detect(query, ["a bird"], max_boxes=3).detections]
    if boxes:
        named = tools.recognize_regions("birds", query, boxes, k=3).regions
        print("detected, then named:", [(box, r.label) for box, r in zip(boxes, named)])
    print("memories:", [(m.name, m.count) for m in tools.list_memories().memories])
    tools.close()


if __name__ == "__main__":
    main()
