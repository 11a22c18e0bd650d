"""The query log: appended records survive a restart, a cut-off line is dropped, settings must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from rar_tools.evaluation.records import EvaluationError, QueryRecord, RecordLog

IDENTITY = {"dataset": "abc", "seed": 0, "k": 5}


def record(query: str, method: str = "clip-knn", shots: int = 1) -> QueryRecord:
    return QueryRecord(
        method=method, shots=shots, query=query, label="a", retrieved=["a", "b"], timings={"encode_s": 0.1}
    )


def test_records_are_read_back_on_resume(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "q.jsonl", IDENTITY)
    log.append(record("1"))
    log.append(record("2", method="rar"))
    resumed = RecordLog(tmp_path / "q.jsonl", IDENTITY, resume=True)
    assert set(resumed.records) == {("clip-knn", 1, "1"), ("rar", 1, "2")}
    assert resumed.records[("clip-knn", 1, "1")] == record("1")


def test_an_existing_log_needs_resume_or_overwrite(tmp_path: Path) -> None:
    RecordLog(tmp_path / "q.jsonl", IDENTITY).append(record("1"))
    with pytest.raises(EvaluationError, match="pass --resume"):
        RecordLog(tmp_path / "q.jsonl", IDENTITY)
    assert RecordLog(tmp_path / "q.jsonl", IDENTITY, overwrite=True).records == {}


def test_resume_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    RecordLog(tmp_path / "q.jsonl", IDENTITY)
    with pytest.raises(EvaluationError, match=r"\(k, seed differ\)"):
        RecordLog(tmp_path / "q.jsonl", {**IDENTITY, "k": 3, "seed": 1}, resume=True)


def test_a_line_cut_short_is_dropped_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    log = RecordLog(path, IDENTITY)
    log.append(record("1"))
    path.write_text(path.read_text() + record("2").model_dump_json()[:25])
    resumed = RecordLog(path, IDENTITY, resume=True)
    assert set(resumed.records) == {("clip-knn", 1, "1")}
    resumed.append(record("3"))
    assert set(RecordLog(path, IDENTITY, resume=True).records) == {("clip-knn", 1, "1"), ("clip-knn", 1, "3")}


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text("hello\n")
    with pytest.raises(EvaluationError, match="not a rar-tools evaluation log"):
        RecordLog(tmp_path / "q.jsonl", IDENTITY, resume=True)
