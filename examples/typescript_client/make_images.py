"""Write the pictures battery.mjs uses: four noisy PNGs, four noisy JPEGs and a 1000x4 strip."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path) -> Path:
    """The battery's pictures in `folder` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"a{i}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"b{i}.jpg")
    Image.new("RGB", (1000, 4), (200, 10, 10)).save(folder / "thin.png")
    return folder


if __name__ == "__main__":
    write_images(Path(sys.argv[1]))
