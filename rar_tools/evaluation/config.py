"""What an evaluation runs (methods, shot counts, k, ranking mode) and how (resume, memory folder).

Light to import (no torch, no models): the CLI builds its `eval` flags from `METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from rar_tools.evaluation.metrics import TOP_N
from rar_tools.evaluation.records import EvaluationError
from rar_tools.evaluation.sampling import ShotSampler
from rar_tools.interrupts import StopRequest
from rar_tools.limits import RankMode
from rar_tools.validation import check_k

Method = Literal["clip-zero-shot", "clip-knn", "rar", "oracle@k", "rar+adapter"]
ADAPTED: Method = "rar+adapter"  # rar with --ranker-adapter on; rar itself then runs with it switched off
METHODS: tuple[Method, ...] = tuple(m for m in get_args(Method) if m != ADAPTED)  # the ones to choose from
RANKED: tuple[Method, ...] = ("rar", ADAPTED)
ZERO_SHOT: Method = "clip-zero-shot"
ZERO_SHOT_SHOTS = 0


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate: methods, shot counts, seed and shot sampler, query limit, k and the ranking mode."""

    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    methods: tuple[Method, ...] = METHODS
    seed: int = 0
    shot_sampler: ShotSampler = "seeded"
    limit: int | None = None
    k: int = 5
    rank_mode: RankMode = "score"
    icl: bool = False
    adapter: bool = False  # the ranker carries a switchable adapter: rar is reported with and without it

    def with_adapter(self, adapter: bool, merged: bool) -> EvalConfig:
        """This configuration for a ranker with (or without) an adapter; a merged one cannot be compared."""
        if adapter and merged and "rar" in self.methods:
            raise EvaluationError(
                "eval reports rar with and without --ranker-adapter, which a merged adapter cannot be switched "
                "back from: drop --ranker-adapter-merge"
            )
        return replace(self, adapter=adapter)

    def checked(self) -> EvalConfig:
        """This configuration validated, with shots sorted and methods in their standard order."""
        unknown = sorted(set(self.methods) - set(METHODS) - {ADAPTED})
        if unknown or not self.methods:
            raise EvaluationError(f"unknown or no methods {unknown}; choose from {', '.join(METHODS)}")
        if ADAPTED in self.methods and not self.adapter:
            raise EvaluationError(f"{ADAPTED} needs a ranker adapter: give --ranker-adapter FOLDER")
        if any(n < 1 for n in self.shots) or (not self.shots and set(self.methods) != {ZERO_SHOT}):
            raise EvaluationError(f"shots must be positive integers, got {list(self.shots)}")
        if self.limit is not None and self.limit < 1:
            raise EvaluationError(f"limit must be at least 1, got {self.limit}")
        check_k(self.k)
        check_k(self.retrieved_per_query)
        methods = tuple(m for m in METHODS if m in self.methods)
        if self.adapter and "rar" in methods:
            methods = methods[: methods.index("rar") + 1] + (ADAPTED,) + methods[methods.index("rar") + 1 :]
        return replace(self, shots=tuple(sorted(set(self.shots))), methods=methods)

    @property
    def retrieved_per_query(self) -> int:
        """Labels retrieved per query: k for rar and oracle@k, at least 5 for top-5."""
        return max(self.k, TOP_N)

    @property
    def image_methods(self) -> tuple[Method, ...]:
        return tuple(m for m in self.methods if m != ZERO_SHOT)

    def groups(self) -> list[tuple[Method, int]]:
        """Every (method, shots) to evaluate, in report order."""
        zero = [(ZERO_SHOT, ZERO_SHOT_SHOTS)] if ZERO_SHOT in self.methods else []
        return zero + [(m, n) for m in self.image_methods for n in self.shots]


@dataclass(frozen=True)
class RunOptions:
    """How to run: continue or discard earlier results, where the memories go, progress bars."""

    resume: bool = False
    overwrite: bool = False
    keep_memory: Path | None = None  # build the memories here and keep them (default: a temporary folder)
    progress: bool | None = None  # bars on stderr; None: only on a terminal
    stop: StopRequest | None = None  # Ctrl-C's request to stop between two queries (see rar_tools.interrupts)
