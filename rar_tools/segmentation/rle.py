"""COCO run-length encoding of binary masks, in the compressed string form `pycocotools` writes.

A mask of height h and width w is read in column-major (Fortran) order; `counts` alternate runs of 0
and 1, starting with 0 (a mask that starts with 1 has a leading run of length 0). The compressed form
writes each count (from the third on, as the difference to the count two before) in 5-bit groups,
least significant first, each group offset by 48 into a printable character, with 0x20 set while more
groups follow. Pure numpy; no pycocotools needed.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np


class Rle(TypedDict):
    """A COCO RLE: `size` is [height, width], `counts` the compressed string."""

    size: list[int]
    counts: str


def run_lengths(mask: np.ndarray) -> list[int]:
    """The alternating 0/1 run lengths of `mask` in column-major order, starting with a 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def compress(counts: list[int]) -> str:
    """pycocotools' `rleToString`: counts as offset 5-bit groups, later counts as differences."""
    chars = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            chars.append(chr(group + 48 + (0x20 if more else 0)))
    return "".join(chars)


def decompress(text: str) -> list[int]:
    """pycocotools' `rleFrString`: the inverse of `compress`."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << (5 * shift)
            more = bool(group & 0x20)
            position += 1
            shift += 1
            if not more and group & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode(mask: np.ndarray) -> Rle:
    """The COCO RLE of a 2-D boolean mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (height, width), got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": compress(run_lengths(mask))}


def decode(rle: Rle) -> np.ndarray:
    """The boolean mask of a COCO RLE (compressed string or a plain list of counts)."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = decompress(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if sum(runs) != height * width:
        raise ValueError(f"the RLE counts cover {sum(runs)} pixels, not {height}x{width}")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order="F")
