"""The ranker interface: what every backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from rar_tools.limits import Fallback, RankMode, ScoreNormalisation

if TYPE_CHECKING:
    from rar_tools.ranking.messages import Part

__all__ = ["Fallback", "RankMode", "RankRequest", "RankResult", "RankedLabel", "Ranker", "RankerConfig"]


@dataclass(frozen=True)
class RankedLabel:
    """One candidate after ranking. `score` is a probability in score mode, a rank-derived
    weight (1/rank, normalised) in generate mode."""

    label: str
    score: float


@dataclass
class RankResult:
    """The outcome of one ranking call."""

    ranked: list[RankedLabel]
    mode: RankMode
    fallback: Fallback = "none"
    raw_text: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> str:
        return self.ranked[0].label


@dataclass(frozen=True)
class RankRequest:
    """Everything a backend needs to rank candidates for one image.

    `exemplars` (optional) holds, per candidate in the same order, one stored example image of
    that label or None; backends show them next to the names. `context` (optional) is a second view
    of the query, the whole picture with the region marked, shown right after the query image.
    """

    image: Image.Image
    candidates: tuple[str, ...]
    mode: RankMode = "score"
    icl: bool = False
    exemplars: tuple[Image.Image | None, ...] | None = None
    context: Image.Image | None = None


class Ranker(Protocol):
    """A backend that orders candidate labels for an image, and writes text about images
    (`complete`: region descriptions). `multi_image`: whether one prompt may show several images."""

    name: str
    multi_image: bool

    def rank(self, request: RankRequest) -> RankResult: ...

    def complete(self, parts: list[Part], max_new_tokens: int) -> str: ...


@dataclass(frozen=True)
class RankerConfig:
    """How to build a ranker: a local transformers model, or an OpenAI-compatible endpoint.

    `score_normalisation` turns a candidate's token log-probabilities into its score (local score
    mode, `continuations.reduce_logprobs`); `permutations` ranks in that many cyclic shifts of the
    candidate order and fuses the results (`permutations.py`); `joint_tokens=False` tokenises each
    candidate apart from the prompt, as score mode did before joint tokenisation (for the benchmark's
    comparison only)."""

    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    device: str = "auto"
    max_new_tokens: int = 256
    max_image_side: int = 768
    url: str | None = None
    api_model: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    score_normalisation: ScoreNormalisation = "sum"
    permutations: int = 1
    joint_tokens: bool = True
    adapter: str | None = None  # a LoRA adapter folder (`rar-tools finetune`) applied to a local model
    merge_adapter: bool = False  # merge it into the weights (faster; it can then not be switched off)
