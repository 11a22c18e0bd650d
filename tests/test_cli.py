"""The command line: same API, settings from flags and RAR_TOOLS_* variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.cli import build_parser, main, settings_from
from rar_tools.cli_flags import image_argument
from rar_tools.errors import RarToolsError
from rar_tools.label_lists import read_label_file


@pytest.fixture
def run(tmp_path: Path, clip_model: str, capsys: pytest.CaptureFixture):
    """Run the CLI with a fresh data dir and the tiny CLIP; returns (exit code, stdout).
    What it wrote to stderr is kept in `invoke.err`."""

    def invoke(*args: str) -> tuple[int, str]:
        code = main([*args, "--data-dir", str(tmp_path / "data"), "--clip-model", clip_model])
        captured = capsys.readouterr()
        invoke.err = captured.err
        return code, captured.out

    return invoke


def test_add_folder_then_retrieve_as_json(run, image_folder: Path) -> None:
    code, out = run("add", "colours", "--folder", str(image_folder))
    assert code == 0 and "red: stored 3 new exemplar image(s)" in out
    code, out = run("retrieve", "colours", str(image_folder / "blue" / "0.png"), "--k", "4", "--json")
    result = json.loads(out)
    assert code == 0 and sorted(c["label"] for c in result["candidates"]) == ["blue", "green", "red", "yellow"]


def test_add_images_with_a_label(run, image_folder: Path) -> None:
    code, out = run(
        "add", "m", str(image_folder / "red" / "0.png"), str(image_folder / "red" / "1.png"), "--label", "red"
    )
    assert code == 0 and "stored 2 new" in out


def test_add_labels_from_a_file_with_hierarchy(run, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# birds\nHerring Gull|gull|seabird\nBlue Jay|jay\nRobin\n")
    code, out = run("add-labels", "zs", "--file", str(labels), "--json")
    assert code == 0 and json.loads(out)["added"] == 3
    code, out = run("memories", "--json")
    assert json.loads(out)["memories"][0]["labels_total"] == 3


def test_memories_lists_counts(run) -> None:
    run("add-labels", "zs", "a", "b")
    code, out = run("memories")
    assert code == 0 and "zs: 2 entries (2 text), 2 labels" in out


def test_remove_by_label(run) -> None:
    run("add-labels", "zs", "a", "b")
    code, out = run("remove", "zs", "--label", "a")
    assert code == 0 and "removed 1 entries; 1 left" in out


def test_errors_go_to_stderr_with_exit_code_2(run) -> None:
    code, out = run("retrieve", "nothing-here", "/no/such.png")
    assert code == 2 and out == ""
    assert "memory 'nothing-here' does not exist" in run.err


def test_label_file_rejects_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("a|b|c|d\n")
    with pytest.raises(RarToolsError, match="expected label\\|category\\|parent"):
        read_label_file(path)


def test_flags_override_environment_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAR_TOOLS_CLIP_MODEL", "from-env")
    monkeypatch.setenv("RAR_TOOLS_BATCH_SIZE", "7")
    args = build_parser().parse_args(["memories", "--clip-model", "from-flag"])
    settings = settings_from(args)
    assert settings.clip_model == "from-flag" and settings.batch_size == 7
    assert settings_from(build_parser().parse_args(["memories"])).clip_model == "from-env"


def test_every_setting_is_a_flag() -> None:
    from rar_tools.settings import Settings

    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text


def test_rank_and_recognize_with_a_ranker_model(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, image_folder: Path, capsys
) -> None:
    common = [
        "--data-dir",
        str(tmp_path / "data"),
        "--clip-model",
        clip_model,
        "--ranker-model",
        str(tiny_models_dir / "mllm"),
    ]
    image = str(image_folder / "red" / "0.png")
    assert main(["rank", image, "--candidates", "red", "blue", "green", "--json", *common]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert sorted(c["label"] for c in ranked["ranked"]) == ["blue", "green", "red"]
    assert main(["add", "colours", "--folder", str(image_folder), *common]) == 0
    capsys.readouterr()
    assert main(["recognize", "colours", image, "--k", "3", "--mode", "generate", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("label: ") and "generate mode" in out and "model answer:" in out


def test_eval_prints_the_table_and_writes_the_outputs(run, labelled_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code, printed = run(
        "eval", str(labelled_folder), "--shots", "1", "2", "--limit", "3", "--methods", "clip-zero-shot", "clip-knn",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0 and "| CLIP kNN | – | " in printed
    assert "TEST WEIGHTS, NOT A RESULT" in run.err
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "queries.jsonl", "report.json", "report.md"]
    assert not (tmp_path / "data").exists()  # --data-dir, the user's memories, is never used


def test_eval_into_a_used_folder_needs_resume(run, labelled_folder: Path, tmp_path: Path) -> None:
    args = ("eval", str(labelled_folder), "--shots", "1", "--limit", "2", "--methods", "clip-knn")
    run(*args, "--out", str(tmp_path / "eval"))
    code, _ = run(*args, "--out", str(tmp_path / "eval"))
    assert code == 2 and "pass --resume" in run.err
    code, printed = run(*args, "--out", str(tmp_path / "eval"), "--resume", "--json")
    assert code == 0 and json.loads(printed)["run"]["queries_reused"] == 2


def test_allow_dir_is_a_repeatable_flag(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = build_parser().parse_args(["serve", "--allow-dir", str(tmp_path / "a"), "--allow-dir", str(tmp_path / "b")])
    assert settings_from(args).allow_dir == [tmp_path / "a", tmp_path / "b"]


@pytest.mark.parametrize("as_json", [True, False], ids=["json-list", "pathsep-joined"])
def test_allow_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    value = json.dumps([str(f) for f in folders]) if as_json else os.pathsep.join(str(f) for f in folders)
    monkeypatch.setenv("RAR_TOOLS_ALLOW_DIR", value)
    assert settings_from(build_parser().parse_args(["serve"])).allow_dir == folders


def test_a_json_list_setting_nested_too_deeply_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAR_TOOLS_ALLOW_DIR", "[" * 5_000 + "]" * 5_000)
    with pytest.raises(ValueError, match="is not a JSON list of folders \\(JSON nested too deeply"):
        settings_from(build_parser().parse_args(["serve"]))


def test_an_image_outside_the_allowed_folder_is_refused(run, image_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "only-here").mkdir()
    run("add-labels", "m", "red")
    code, _ = run("retrieve", "m", str(image_folder / "red" / "0.png"), "--allow-dir", str(tmp_path / "only-here"))
    assert code == 2 and "outside the folders this server may read" in run.err


def test_a_missing_allowed_folder_is_an_invalid_setting(run, tmp_path: Path) -> None:
    code, _ = run("memories", "--allow-dir", str(tmp_path / "missing"))
    assert code == 2 and "does not exist or is not a folder" in run.err


@pytest.mark.parametrize(
    "url", ["https://example.org/bird.jpg", "http://127.0.0.1:8000/a.png", "data:image/png;base64,AA"]
)
def test_urls_pass_through_unchanged(url: str) -> None:
    assert image_argument(url) == url


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert image_argument("photos/a.png") == str(tmp_path / "photos" / "a.png")


def test_a_shipped_vocabulary_loads_in_one_command(run) -> None:
    code, out = run("add-labels", "pets", "--vocabulary", "oxford_pets", "--json")
    assert code == 0 and json.loads(out)["added"] == 37


def test_an_unknown_vocabulary_lists_the_shipped_ones(run) -> None:
    code, _ = run("add-labels", "pets", "--vocabulary", "no-such-list")
    assert code == 2 and "unknown vocabulary 'no-such-list'" in run.err and "oxford_pets" in run.err


def test_vocabularies_are_listed_with_their_sizes(run) -> None:
    code, out = run("vocabularies")
    assert code == 0 and "lvis_v1: 1203 labels" in out and "cub_200: 200 labels" in out


def scene_file(tmp_path: Path) -> str:
    pixels = np.random.default_rng(4).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    return str(tmp_path / "scene.png")


def test_retrieve_a_region(run, tmp_path: Path) -> None:
    run("add-labels", "zs", "Herring Gull", "Blue Jay")
    code, out = run("retrieve", "zs", scene_file(tmp_path), "--box", "10", "10", "60", "50", "--views", "3", "--json")
    result = json.loads(out)
    assert code == 0 and result["region"]["box"] == [10, 10, 60, 50] and len(result["region"]["view_steps"]) == 3


def test_detect_prints_boxes_inside_the_image(run, tmp_path: Path, tiny_models_dir: Path) -> None:
    detector = str(tiny_models_dir / "detector")
    scene = scene_file(tmp_path)
    code, out = run("detect", scene, "--query", "a bird", "--threshold", "0", "--detector-model", detector, "--json")
    boxes = [d["box"] for d in json.loads(out)["detections"]]
    assert code == 0 and boxes and all(0 <= x1 < x2 <= 120 and 0 <= y1 < y2 <= 80 for x1, y1, x2, y2 in boxes)
    code, out = run("detect", scene, "--query", "a bird", "--threshold", "0", "--detector-model", detector)
    assert code == 0 and out.startswith(f"{len(boxes)} box(es) from transformers:")


def test_recognize_regions_names_each_box(run, tmp_path: Path, tiny_models_dir: Path) -> None:
    run("add-labels", "zs", "Herring Gull", "Blue Jay", "Cardinal")
    code, out = run(
        "recognize-regions",
        "zs",
        scene_file(tmp_path),
        "--box",
        "0",
        "0",
        "40",
        "40",
        "--box",
        "50",
        "20",
        "110",
        "70",
        "--k",
        "2",
        "--ranker-model",
        str(tiny_models_dir / "mllm"),
        "--json",
    )
    regions = json.loads(out)["regions"]
    assert code == 0 and [r["retrieval"]["region"]["box"] for r in regions] == [[0, 0, 40, 40], [50, 20, 110, 70]]
