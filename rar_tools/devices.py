"""Choosing the torch device and precision."""

from __future__ import annotations

import torch

from rar_tools.errors import ModelLoadError


def resolve_device(name: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; an explicit name is checked for availability."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} was asked for, but CUDA is not available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device 'mps' was asked for, but MPS is not available here")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ModelLoadError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return name
