"""Per-query results, written one JSON line at a time so that an interrupted run can resume.

The first line of the log is a header naming the run's identity (data set, models, seed, k, rank
mode: everything that changes an answer); a resumed run must have the same identity. Each further
line is one `QueryRecord`, keyed by (method, shots, query id). A line cut short by an interruption
is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from rar_tools.errors import RarToolsError
from rar_tools.jsontext import parse_json

log = logging.getLogger(__name__)
LOG_FORMAT = "rar-tools-eval-queries/1"
RecordKey = tuple[str, int, str]


class EvaluationError(RarToolsError):
    """An evaluation cannot start or continue as asked."""


class QueryRecord(BaseModel):
    """What one method answered for one query image at one shot count (labels as the data set gives them)."""

    method: str
    shots: int = Field(description="images per class in the memory; 0 for the zero-shot text memory")
    query: str = Field(description="the query image's id in the data set")
    label: str = Field(description="the true label")
    retrieved: list[str] = Field(description="distinct labels retrieved, best first (max(k, 5) of them)")
    ranked: list[str] | None = Field(None, description="rar: the k retrieved labels as the MLLM ordered them")
    fallback: Literal["none", "partial", "full"] | None = Field(
        None, description="rar: how much of the MLLM's answer had to be repaired (None: nothing was ranked)"
    )
    timings: dict[str, float] = Field(description="seconds for this query: encode_s, retrieve_s, rank_s")

    @property
    def key(self) -> RecordKey:
        return (self.method, self.shots, self.query)


def identity_fingerprint(identity: dict[str, Any]) -> str:
    """A short hash of a run identity (a JSON-able dict)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RecordLog:
    """The JSONL file of one run's query records."""

    def __init__(self, path: Path, identity: dict[str, Any], resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.identity = identity
        self.fingerprint = identity_fingerprint(identity)
        self.records: dict[RecordKey, QueryRecord] = {}
        if self.path.exists() and not overwrite:
            if not resume:
                raise EvaluationError(
                    f"{self.path} already holds query results of a run: pass --resume to continue it, "
                    "or --overwrite to start again"
                )
            self.records = self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = {"format": LOG_FORMAT, "fingerprint": self.fingerprint, "identity": identity}
            self.path.write_text(json.dumps(header, default=str) + "\n", encoding="utf-8")

    def _read(self) -> dict[RecordKey, QueryRecord]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        header = read_header(lines[0] if lines else "")
        if header is None:
            raise EvaluationError(f"{self.path} is not a rar-tools evaluation log")
        if header.get("fingerprint") != self.fingerprint:
            changed = differing_keys(header.get("identity", {}), self.identity)
            raise EvaluationError(
                f"cannot resume {self.path}: it was written with other settings ({', '.join(changed)} differ). "
                "Resume with the same data set, models, seed, k and rank mode, or use another --out folder"
            )
        records = {}
        for number, line in enumerate(lines[1:], 2):
            try:
                record = QueryRecord.model_validate_json(line)
            except ValidationError:
                if number == len(lines):  # the last line, cut short when the run was stopped
                    log.warning("%s: dropping an incomplete last line", self.path)
                    self._drop_last_line()
                    continue
                raise EvaluationError(f"{self.path}:{number} is not a valid query record") from None
            records[record.key] = record
        return records

    def _drop_last_line(self) -> None:
        """Cut the file after its last newline, so that appended records start on a line of their own."""
        data = self.path.read_bytes()
        self.path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])

    def append(self, record: QueryRecord) -> None:
        """Write one record (flushed at once) and remember it."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(record.model_dump_json() + "\n")
        self.records[record.key] = record

    def has(self, key: RecordKey) -> bool:
        return key in self.records


def read_header(line: str) -> dict[str, Any] | None:
    """The header of an evaluation log, or None when `line` is not one."""
    try:
        header = parse_json(line)
    except ValueError:
        return None
    return header if isinstance(header, dict) and header.get("format") == LOG_FORMAT else None


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The top-level keys whose values differ between two identities."""
    return sorted(
        name
        for name in set(old) | set(new)
        if identity_fingerprint({name: old.get(name)}) != identity_fingerprint({name: new.get(name)})
    )
