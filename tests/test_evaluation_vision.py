"""`rar-tools eval --task segment` on masks the test draws, and `--task describe` on drawn images, with
the tiny models: the figures are computed and hang together (random weights: no accuracy asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.cli import main
from rar_tools.segmentation import rle

SIZE = (60, 40)


def draw_set(root: Path) -> Path:
    """Three images: a red square and a blue disc on grey, with their masks; 'background' covers every pixel."""
    for index in range(3):
        image = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
        square = np.zeros((SIZE[1], SIZE[0]), bool)
        square[5 + index : 25 + index, 5:25] = True
        yy, xx = np.mgrid[: SIZE[1], : SIZE[0]]
        disc = (xx - 42) ** 2 + (yy - 20) ** 2 < (8 + index) ** 2
        image[square], image[disc] = (220, 30, 30), (30, 60, 220)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"scene{index}.png")
        folder = root / "masks" / f"scene{index}"
        folder.mkdir(parents=True)
        for name, mask in {"red_square": square, "blue_disc": disc, "background": np.ones_like(square)}.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}.png")
    return root


def flags(tmp_path: Path, clip_model: str, *more: str) -> list[str]:
    return ["--data-dir", str(tmp_path / "data"), "--clip-model", clip_model, *more]


def test_segment_evaluation_reports_iou_per_label_and_their_mean(tmp_path: Path, clip_model: str, capsys) -> None:
    root, out = draw_set(tmp_path / "set"), tmp_path / "out"
    code = main(
        [
            "eval",
            str(root),
            "--task",
            "segment",
            "--out",
            str(out),
            "--json",
            *flags(tmp_path, clip_model, "--no-ranker"),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["labels"] == ["background", "blue disc", "red square"]
    rows = {row["label"]: row for row in report["per_label"]}
    for row in rows.values():
        assert 0 <= row["intersection"] <= row["union"]
        assert row["iou"] == pytest.approx(row["intersection"] / row["union"])
    assert rows["background"]["union"] == 3 * SIZE[0] * SIZE[1]  # its truth is every pixel of every image
    assert report["mean_iou"] == pytest.approx(np.mean([row["iou"] for row in rows.values()]))
    assert report["warning"].startswith("TEST WEIGHTS")
    assert (out / "report-segment.json").is_file() and "mIoU" in (out / "report-segment.md").read_text()


def test_segment_evaluation_counts_the_predicted_area_of_the_whole_truth_label(
    tmp_path: Path, clip_model: str, capsys
) -> None:
    from rar_tools.api import RarTools
    from rar_tools.evaluation.segmentation import evaluate_segmentation
    from rar_tools.settings import Settings

    root = draw_set(tmp_path / "set")
    tools = RarTools(Settings(data_dir=tmp_path / "data", clip_model=clip_model, no_ranker=True))
    report, _ = evaluate_segmentation(tools, root, tmp_path / "out")
    labels = ["background", "blue disc", "red square"]
    predicted = 0
    for index in range(3):
        result = tools.segment(str(root / "images" / f"scene{index}.png"), labels)
        predicted += sum(
            int(rle.decode(m.rle.model_dump()).sum()) for m in result.regions[0].masks if m.label == "background"
        )
    background = next(row for row in report.per_label if row.label == "background")
    assert background.intersection == predicted  # inside an all-covering truth, every predicted pixel is a hit


def test_a_folder_without_masks_is_refused_clearly(tmp_path: Path, clip_model: str, capsys) -> None:
    (tmp_path / "set" / "images").mkdir(parents=True)
    code = main(["eval", str(tmp_path / "set"), "--task", "segment", *flags(tmp_path, clip_model, "--no-ranker")])
    assert code == 2 and "images/<name>.<ext> and masks/<name>/<label>.png" in capsys.readouterr().err


def test_describe_evaluation_reports_fallback_and_found_rates(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, capsys
) -> None:
    root = draw_set(tmp_path / "set")
    (root / "boxes.json").write_text(json.dumps({"scene0.png": [[5, 5, 25, 25], [34, 12, 50, 28]]}))
    arguments = ["eval", str(root), "--task", "describe", "--views", "1", "--out", str(tmp_path / "out"), "--json"]
    code = main([*arguments, *flags(tmp_path, clip_model, "--ranker-model", str(tiny_models_dir / "mllm"))])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["regions"], report["views"]) == (3, 4, 1)  # 2 boxes + 2 whole images
    assert sum(report["fallback_rates"].values()) == pytest.approx(1.0)
    assert set(report["found_rates"]) == {"caption", "attributes", "label"}
    assert all(0 <= rate <= 1 for rate in report["found_rates"].values())
    assert report["warning"].startswith("TEST WEIGHTS") and report["seconds_per_region"] > 0
