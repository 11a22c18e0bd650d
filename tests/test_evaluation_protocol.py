"""The harness end to end: tiny checkpoints, a synthetic three-class image set, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import locked_by_someone
from PIL import Image

from rar_tools.encoder import ClipEncoder
from rar_tools.errors import RankerError
from rar_tools.evaluation import EvalConfig, EvaluationError, RunOptions, evaluate, load_dataset
from rar_tools.evaluation.protocol import QUERIES_FILE
from rar_tools.memory import MemoryStore
from rar_tools.settings import Settings

CONFIG = EvalConfig(shots=(1, 2), seed=7, k=3)


@pytest.fixture
def eval_settings(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> Settings:
    """The tiny CLIP and Qwen2-VL; `data_dir` stands for the user's own memories."""
    return Settings(
        data_dir=tmp_path / "user-memories",
        clip_model=clip_model,
        ranker_model=str(tiny_models_dir / "mllm"),
        ranker_max_new_tokens=16,
    )


def answers(out: Path) -> list[dict]:
    """The query records of a run, without their timings, in a stable order."""
    lines = (out / QUERIES_FILE).read_text().splitlines()[1:]
    records = [{k: v for k, v in json.loads(line).items() if k != "timings"} for line in lines]
    return sorted(records, key=lambda r: (r["method"], r["shots"], r["query"]))


def figures(report) -> list[dict]:
    """The report's figures without timings and work counts (which differ between equal runs)."""
    drop = {"seconds_per_image", "computed", "reused"}
    return [f.model_dump(exclude=drop) for f in report.results]


def test_run_writes_every_output_with_figures_in_range(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    report, paths = evaluate(eval_settings, load_dataset(labelled_folder), CONFIG, tmp_path / "out")
    assert {(f.method, f.shots) for f in report.results} == {("clip-zero-shot", 0)} | {
        (m, n) for m in ("clip-knn", "rar", "oracle@k") for n in (1, 2)
    }
    for f in report.results:
        assert f.queries == 9
        for value in (f.top1, f.top5, f.recall_at_k, f.fallback_rate):
            assert value is None or 0.0 <= value <= 1.0
    on_disk = json.loads(paths["json"].read_text())
    assert on_disk["configuration"]["protocol"]["shots"] == [1, 2]
    assert on_disk["configuration"]["versions"]["torch"]
    assert "| CLIP kNN | – |" in paths["markdown"].read_text()
    assert Image.open(paths["plot"]).format == "PNG"


def test_oracle_bounds_rar_and_knn_from_the_same_retrieval(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    report, _ = evaluate(eval_settings, load_dataset(labelled_folder), CONFIG, tmp_path / "out")
    top1 = {(f.method, f.shots): f.top1 for f in report.results}
    for n in (1, 2):
        assert top1[("oracle@k", n)] >= max(top1[("rar", n)], top1[("clip-knn", n)])


def test_test_weights_are_stated_in_every_output(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    report, paths = evaluate(eval_settings, load_dataset(labelled_folder), CONFIG, tmp_path / "out")
    assert report.weights.test_weights and report.warning.startswith("TEST WEIGHTS, NOT A RESULT")
    assert json.loads(paths["json"].read_text())["weights"]["test_weights"] is True
    assert "⚠ TEST WEIGHTS, NOT A RESULT" in paths["markdown"].read_text().splitlines()[2]


def test_the_same_seed_gives_the_same_answers(eval_settings: Settings, labelled_folder: Path, tmp_path: Path) -> None:
    dataset = load_dataset(labelled_folder)
    evaluate(eval_settings, dataset, CONFIG, tmp_path / "a")
    evaluate(eval_settings, dataset, CONFIG, tmp_path / "b")
    assert answers(tmp_path / "a") == answers(tmp_path / "b")


def test_resume_computes_only_the_missing_queries_and_matches_a_fresh_run(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    dataset = load_dataset(labelled_folder)
    partial = EvalConfig(shots=(1, 2), seed=7, k=3, limit=4)
    full = EvalConfig(shots=(1, 2), seed=7, k=3, limit=7)
    evaluate(eval_settings, dataset, partial, tmp_path / "resumed")
    resumed, _ = evaluate(eval_settings, dataset, full, tmp_path / "resumed", RunOptions(resume=True))
    assert {(f.computed, f.reused) for f in resumed.results} == {(3, 4)}
    fresh, _ = evaluate(eval_settings, dataset, full, tmp_path / "fresh")
    assert figures(resumed) == figures(fresh)
    assert answers(tmp_path / "resumed") == answers(tmp_path / "fresh")


def test_a_finished_run_resumes_without_any_work(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    dataset = load_dataset(labelled_folder)
    config = EvalConfig(shots=(1,), methods=("clip-knn",), limit=3)
    evaluate(eval_settings, dataset, config, tmp_path / "out")
    again, _ = evaluate(eval_settings, dataset, config, tmp_path / "out", RunOptions(resume=True))
    assert again.run["queries_computed"] == 0 and again.run["queries_reused"] == 3


def test_resume_with_another_k_is_refused(eval_settings: Settings, labelled_folder: Path, tmp_path: Path) -> None:
    dataset = load_dataset(labelled_folder)
    evaluate(eval_settings, dataset, EvalConfig(shots=(1,), methods=("clip-knn",), limit=2), tmp_path / "out")
    with pytest.raises(EvaluationError, match="k differ"):
        evaluate(
            eval_settings, dataset, EvalConfig(shots=(1,), k=2, limit=2), tmp_path / "out", RunOptions(resume=True)
        )


def test_resume_with_other_ranking_settings_is_refused(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    dataset, config = load_dataset(labelled_folder), EvalConfig(shots=(1,), methods=("clip-knn",), limit=2)
    evaluate(eval_settings, dataset, config, tmp_path / "out")
    for changed in ({"rank_permutations": 3}, {"score_normalisation": "mean"}):
        with pytest.raises(EvaluationError, match="settings differ"):
            evaluate(
                eval_settings.model_copy(update=changed), dataset, config, tmp_path / "out", RunOptions(resume=True)
            )


def test_user_memories_are_never_touched(eval_settings: Settings, labelled_folder: Path, tmp_path: Path) -> None:
    config = EvalConfig(shots=(1,), methods=("clip-zero-shot", "clip-knn"), limit=2)
    evaluate(eval_settings, load_dataset(labelled_folder), config, tmp_path / "out")
    assert not eval_settings.data_dir.exists()


def test_keep_memory_keeps_one_named_memory_per_shot_count(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    config = EvalConfig(shots=(1, 2), methods=("clip-zero-shot", "clip-knn"), seed=7, limit=2)
    evaluate(
        eval_settings,
        load_dataset(labelled_folder),
        config,
        tmp_path / "out",
        RunOptions(keep_memory=tmp_path / "kept"),
    )
    assert not locked_by_someone(tmp_path / "kept")  # the run closed its store
    store = MemoryStore(tmp_path / "kept")
    assert store.names() == ["eval-labelled-seed7-1shot", "eval-labelled-seed7-2shot", "eval-labelled-zeroshot"]
    assert store.count("eval-labelled-seed7-2shot") == 6
    assert sorted(store.summary("eval-labelled-zeroshot").label_counts) == ["blue thing", "green thing", "red thing"]


def test_labels_are_reported_as_the_data_set_gives_them(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    config = EvalConfig(shots=(1,), methods=("rar",), limit=3)
    evaluate(eval_settings, load_dataset(labelled_folder), config, tmp_path / "out")
    for record in answers(tmp_path / "out"):
        assert set(record["ranked"]) | set(record["retrieved"]) <= {"blue_thing", "green_thing", "red_thing"}


def test_generate_mode_reports_a_fallback_rate(eval_settings: Settings, labelled_folder: Path, tmp_path: Path) -> None:
    config = EvalConfig(shots=(1,), methods=("rar",), rank_mode="generate", limit=3)
    report, _ = evaluate(eval_settings, load_dataset(labelled_folder), config, tmp_path / "out")
    (rar,) = report.results
    assert rar.fallback_rate is not None and 0.0 <= rar.fallback_rate <= 1.0
    assert all(r["fallback"] in ("none", "partial", "full") for r in answers(tmp_path / "out"))


def test_an_unreadable_image_is_skipped_and_listed(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    (labelled_folder / "test" / "red_thing" / "0.png").write_bytes(b"not an image")
    config = EvalConfig(shots=(1,), methods=("clip-knn",))
    report, _ = evaluate(eval_settings, load_dataset(labelled_folder), config, tmp_path / "out")
    assert list(report.skipped_images) == ["test/red_thing/0.png"]
    assert report.results[0].queries == 8


def test_rar_without_a_ranker_fails_before_any_work(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path
) -> None:
    settings = eval_settings.model_copy(update={"no_ranker": True})
    with pytest.raises(RankerError, match="no ranker"):
        evaluate(settings, load_dataset(labelled_folder), EvalConfig(shots=(1,)), tmp_path / "out")
    assert (tmp_path / "out" / QUERIES_FILE).read_text().count("\n") == 1  # the header only


def test_each_image_is_encoded_once_for_all_methods_and_shot_counts(
    eval_settings: Settings, labelled_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    original = ClipEncoder.encode_images

    def counting(self: ClipEncoder, images):  # the real encoder, counted
        encoded.append(len(images))
        return original(self, images)

    monkeypatch.setattr(ClipEncoder, "encode_images", counting)
    evaluate(eval_settings, load_dataset(labelled_folder), CONFIG, tmp_path / "out")
    assert sum(encoded) == 9 + 2 * 3  # 9 queries, and the 2-shot memory (the 1-shot one is inside it)
