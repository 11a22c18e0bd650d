"""One self-check result: a verdict, a sentence, and the figures behind it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "skip", "measured"]


@dataclass
class Check:
    """`pass` / `fail` for a bound checked; `measured` for a figure reported; `skip` where the device
    cannot run it."""

    name: str
    status: Status
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status.upper():8s} {self.name}: {self.detail}"


def measured(name: str, detail: str, figures: dict[str, Any]) -> Check:
    return Check(name, "measured", detail, figures)


def guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """`run()`'s checks, or one failed check naming the error that stopped it."""
    try:
        return run()
    except Exception as exc:  # a self-check reports every failure and goes on with the next part
        return [Check(name, "fail", f"{type(exc).__name__}: {exc}")]
