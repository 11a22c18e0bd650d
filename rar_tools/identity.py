"""The identity of a CLIP encoder, as a memory records it. Light to import (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderIdentity:
    """What a memory records about the encoder that filled it."""

    model: str
    pretrained: str
    dim: int

    def describe(self) -> str:
        return f"{self.model} ({self.pretrained}, {self.dim}-d)"
