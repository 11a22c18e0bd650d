"""Benchmark results: tables for the terminal, targets with verdicts, and the JSON document."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("rar-tools", "torch", "open_clip_torch", "transformers", "chromadb", "mcp", "numpy", "pillow")


@dataclass
class Table:
    """Rows of already formatted cells under column headings."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Target:
    """A figure with the bound it must meet: `value >= bound` (at_least) or `value < bound`."""

    name: str
    value: float
    bound: float
    at_least: bool
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.bound if self.at_least else self.value < self.bound

    def describe(self) -> str:
        relation = ">=" if self.at_least else "<"
        verdict = "met" if self.met else "MISSED"
        text = f"{self.name}: {self.value:.4g}{self.unit} (target {relation} {self.bound:g}{self.unit}) {verdict}"
        return f"{text}; {self.note}" if self.note else text


@dataclass
class SectionResult:
    """One benchmark section: its tables, every figure (for the JSON), targets and notes."""

    name: str
    tables: list[Table]
    figures: dict[str, Any]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        targets = [{**asdict(t), "met": t.met} for t in self.targets]
        return {"figures": self.figures, "targets": targets, "notes": self.notes}


def render_table(table: Table) -> str:
    """A plain-text table with right-aligned columns."""
    widths = [max(len(str(c)), *(len(row[i]) for row in table.rows)) for i, c in enumerate(table.columns)]
    lines = [table.title, "  ".join(c.rjust(w) for c, w in zip(table.columns, widths))]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table.rows]
    return "\n".join(lines)


def render_section(result: SectionResult) -> str:
    parts = [f"== {result.name} =="]
    parts += [render_table(t) for t in result.tables]
    parts += [f"target {t.describe()}" for t in result.targets]
    parts += [f"note: {n}" for n in result.notes]
    return "\n".join(parts) + "\n"


def environment(device: str) -> dict[str, Any]:
    """Versions, machine and device: what the figures depend on."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "versions": versions,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env["gpu"] = {"name": props.name, "memory_bytes": int(props.total_memory)}
    return env


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
