"""Which weights an evaluation used, and whether they are test weights whose numbers mean nothing.

Detection is by evidence, never by name: an encoder built with no weights reports `random-init`,
and the project's tiny checkpoints carry a marker file (`rar_tools.checkpoints`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from rar_tools.checkpoints import MARKER_FILE, is_tiny_checkpoint
from rar_tools.settings import Settings

if TYPE_CHECKING:
    from rar_tools.encoder import EncoderIdentity

LOCAL_DIR = "local-dir:"


class WeightsInfo(BaseModel):
    """The models behind the figures."""

    clip: str = Field(description="CLIP model and weights, as the encoder identifies itself")
    ranker: str | None = Field(None, description="the MLLM ranker (backend:model), when rar was evaluated")
    test_weights: bool = Field(description="True when any model has random or tiny test weights")
    warnings: list[str] = Field(default_factory=list, description="why the weights are test weights")


def clip_warnings(settings: Settings, identity: EncoderIdentity) -> list[str]:
    """Evidence that the CLIP encoder has test weights."""
    found = []
    if identity.pretrained == "random-init":
        found.append(f"CLIP {identity.model} was built with random weights (no pretrained weights loaded)")
    if settings.clip_model.startswith(LOCAL_DIR) and is_tiny_checkpoint(Path(settings.clip_model[len(LOCAL_DIR) :])):
        found.append(f"CLIP {settings.clip_model} is a tiny random test checkpoint (it holds {MARKER_FILE})")
    return found


def ranker_warnings(settings: Settings) -> list[str]:
    """Evidence that the local MLLM ranker has test weights (an endpoint's weights cannot be checked)."""
    if settings.ranker_url or not is_tiny_checkpoint(Path(settings.ranker_model)):
        return []
    return [f"the ranker {settings.ranker_model} is a tiny random test checkpoint (it holds {MARKER_FILE})"]


def describe_weights(settings: Settings, identity: EncoderIdentity, ranker_name: str | None) -> WeightsInfo:
    """The weights used for CLIP and (when `ranker_name` is given) the ranker, with test-weight warnings."""
    warnings = clip_warnings(settings, identity)
    if ranker_name is not None:
        warnings += ranker_warnings(settings)
    return WeightsInfo(
        clip=f"{settings.clip_model} ({identity.pretrained}, {identity.dim}-d)",
        ranker=ranker_name,
        test_weights=bool(warnings),
        warnings=warnings,
    )
