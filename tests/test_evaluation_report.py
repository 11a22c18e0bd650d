"""The report: the paper-style table, the plot, and no warning where the weights are real."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from rar_tools.encoder import EncoderIdentity
from rar_tools.evaluation.datasets import Dataset, LabelledImage
from rar_tools.evaluation.metrics import MethodFigures
from rar_tools.evaluation.protocol import EvalConfig, RunOutcome
from rar_tools.evaluation.report import build_report, render_markdown, write_report
from rar_tools.settings import Settings

CONFIG = EvalConfig(shots=(1, 4), methods=("clip-zero-shot", "clip-knn", "rar", "oracle@k")).checked()
ITEMS = tuple(LabelledImage(f"{label}{n}", f"/d/{label}{n}.jpg", label) for label in ("a_b", "c") for n in range(4))
DATASET = Dataset("toy", "/d", "folder", ITEMS[:2] + ITEMS[4:6], ITEMS[2:4] + ITEMS[6:])


def figure(method: str, shots: int, top1: float) -> MethodFigures:
    return MethodFigures(
        method=method,
        shots=shots,
        queries=4,
        top1=top1,
        top5=None if method == "oracle@k" else 1.0,
        recall_at_k=1.0,
        fallback_rate=0.25 if method == "rar" else None,
        seconds_per_image={"encode_s": 0.01, "retrieve_s": 0.002, "rank_s": 0.0, "total_s": 0.012},
        computed=4,
    )


@pytest.fixture
def report():
    figures = [figure("clip-zero-shot", 0, 0.5)]
    figures += [figure(m, n, t) for m, t in (("clip-knn", 0.5), ("rar", 0.75), ("oracle@k", 1.0)) for n in (1, 4)]
    outcome = RunOutcome(
        figures=figures,
        encoder=EncoderIdentity("ViT-B-16", "openai", 512),
        device="cuda",
        ranker_name="transformers:llava-hf/llava-1.5-7b-hf",
        queries=4,
    )
    settings = Settings(ranker_model="llava-hf/llava-1.5-7b-hf", ranker_api_key="secret-key")
    return build_report(settings, DATASET, CONFIG, outcome, keep_memory=None)


def test_real_weights_carry_no_warning(report) -> None:
    assert report.warning is None and "TEST WEIGHTS" not in render_markdown(report)


def test_table_rows_are_methods_and_columns_are_shots(report) -> None:
    lines = render_markdown(report).splitlines()
    top1 = lines[lines.index("## Top-1 accuracy (%)") + 2 :][:6]
    assert top1 == [
        "| method | zero-shot | 1-shot | 4-shot |",
        "|---|---|---|---|",
        "| CLIP zero-shot | 50.0 | – | – |",
        "| CLIP kNN | – | 50.0 | 50.0 |",
        "| RAR (score mode, k=5) | – | 75.0 | 75.0 |",
        "| oracle@5 | – | 100.0 | 100.0 |",
    ]


def test_weights_and_configuration_are_recorded_without_secrets(report) -> None:
    text = report.model_dump_json()
    assert report.weights.ranker == "transformers:llava-hf/llava-1.5-7b-hf"
    assert report.configuration["models"]["clip"] == {"model": "ViT-B-16", "pretrained": "openai", "dim": 512}
    assert "secret-key" not in text and "ranker_api_key" not in text


def test_every_output_file_is_written(report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "out")
    assert paths["json"].read_text().startswith("{")
    assert paths["markdown"].read_text().startswith("# RAR evaluation on toy")
    with Image.open(paths["plot"]) as plot:
        assert plot.format == "PNG" and plot.size[0] > 400
