"""The evaluation's outputs: a JSON file with every figure and the exact configuration, a Markdown
table like the paper's (rows: methods, columns: shots), and a PNG plot of accuracy against shots.

All three name the weights used; with random or tiny test weights they say so first and loudest.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rar_tools.evaluation.config import ZERO_SHOT, ZERO_SHOT_SHOTS, EvalConfig
from rar_tools.evaluation.datasets import Dataset
from rar_tools.evaluation.metrics import DEFINITIONS, MethodFigures
from rar_tools.evaluation.protocol import QUERIES_FILE, RunOutcome, shortest_class
from rar_tools.evaluation.sampling import by_label
from rar_tools.evaluation.weights import WeightsInfo, describe_weights
from rar_tools.settings import Settings

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_PLOT = "accuracy.png"
PACKAGES = ("rar-tools", "torch", "open_clip_torch", "transformers", "chromadb", "numpy", "pillow", "mcp")
SECRET_SETTINGS = {"ranker_api_key"}
NOT_USED_SETTINGS = {"data_dir", "transport", "host", "port"}
MISSING = "–"
SAMPLERS = {
    "seeded": "seeded: per class, the first n of a seeded shuffle of its train images (nested over n)",
    "first": "first: per class, its first n train images in data set order (the RAR reference code's way)",
}


class EvalReport(BaseModel):
    """Everything an evaluation measured, and exactly how."""

    title: str
    weights: WeightsInfo
    warning: str | None = Field(None, description="present when the figures come from test weights")
    chance_top1: float = Field(description="top-1 accuracy of guessing: 1 / number of classes")
    results: list[MethodFigures]
    definitions: dict[str, str]
    configuration: dict[str, Any]
    run: dict[str, Any]
    skipped_images: dict[str, str] = Field(description="image id -> why it could not be read")
    shot_warnings: list[str] = Field(
        default_factory=list, description="shot counts some classes cannot fill: their memories hold fewer images"
    )


def versions() -> dict[str, str]:
    """Python, the platform and the installed versions of the packages that shape the figures."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def test_weights_warning(weights: WeightsInfo, classes: int) -> str | None:
    """The banner shown when the weights are test weights."""
    if not weights.test_weights:
        return None
    return (
        "TEST WEIGHTS, NOT A RESULT: " + "; ".join(weights.warnings) + ". Random weights recognise nothing: "
        f"expect chance level (top-1 = 1/{classes} = {100 / classes:.1f}%), and read any figure above it as raw "
        "pixel statistics such as colour, not as the method's accuracy. This run shows that the pipeline works; "
        "evaluate with real weights (see the README) for meaningful numbers."
    )


def shot_warnings(dataset: Dataset, shots: tuple[int, ...]) -> list[str]:
    """A warning per shot count that some classes have fewer train images for: their n-shot memory
    holds all they have, so that column is not a true n-shot figure."""
    sizes = [len(group) for group in by_label(dataset.train).values()]
    warnings = []
    for n in shots:
        short = sum(size < n for size in sizes)
        if short:
            warnings.append(
                f"{n}-shot: {short} of {len(sizes)} classes have fewer than {n} train images (the fewest: "
                f"{min(sizes)}); their memories hold every image they have, so the {n}-shot figures are not "
                f"true {n}-shot figures"
            )
    return warnings


def build_report(
    settings: Settings, dataset: Dataset, config: EvalConfig, outcome: RunOutcome, keep_memory: Path | None
) -> EvalReport:
    """The report of a finished run."""
    classes = len(dataset.labels)
    weights = describe_weights(settings, outcome.encoder, outcome.ranker_name)
    used = settings.model_dump(mode="json", exclude=SECRET_SETTINGS | NOT_USED_SETTINGS)
    configuration = {
        "dataset": {
            "name": dataset.name,
            "root": dataset.root,
            "format": dataset.format,
            "fingerprint": dataset.fingerprint(),
            "classes": classes,
            "train_images": len(dataset.train),
            "test_images": len(dataset.test),
            "queries": outcome.queries,
            "query_selection": "every test image" if config.limit is None else f"seeded subset of {config.limit}",
            "fewest_train_images_in_a_class": shortest_class(dataset),
        },
        "protocol": {
            "methods": list(config.methods),
            "shots": list(config.shots),
            "seed": config.seed,
            "limit": config.limit,
            "k": config.k,
            "labels_retrieved_per_query": config.retrieved_per_query,
            "rank_mode": config.rank_mode,
            "icl": config.icl,
            "shot_sampler": SAMPLERS[config.shot_sampler],
        },
        "models": {
            "clip": asdict(outcome.encoder),
            "ranker": outcome.ranker_name,
            "device": outcome.device,
            "settings": used,
        },
        "memory_store": str(keep_memory) if keep_memory else "temporary (deleted after the run)",
        "versions": versions(),
    }
    run = {
        "started_at": outcome.started_at,
        "wall_s": round(outcome.wall_s, 3),
        "queries_computed": sum(f.computed for f in outcome.figures),
        "queries_reused": sum(f.reused for f in outcome.figures),
        "memory_images_encoded": outcome.memory_images,
        "memory_encode_s_per_image": outcome.memory_encode_s / outcome.memory_images if outcome.memory_images else 0,
        "query_log": QUERIES_FILE,
    }
    return EvalReport(
        title=f"RAR evaluation on {dataset.name}",
        weights=weights,
        warning=test_weights_warning(weights, classes),
        chance_top1=1 / classes,
        results=outcome.figures,
        definitions=DEFINITIONS,
        configuration=configuration,
        run=run,
        skipped_images=outcome.skipped,
        shot_warnings=shot_warnings(dataset, config.shots),
    )


# -- Markdown ------------------------------------------------------------------------------------
def method_title(method: str, config: dict[str, Any]) -> str:
    """How a method is named in tables and plots."""
    return {
        "clip-zero-shot": "CLIP zero-shot",
        "clip-knn": "CLIP kNN",
        "rar": f"RAR ({config['rank_mode']} mode, k={config['k']})",
        "rar+adapter": f"RAR + adapter ({config['rank_mode']} mode, k={config['k']})",
        "oracle@k": f"oracle@{config['k']}",
    }.get(method, method)


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def shots_table(report: EvalReport, value: str, rows: dict[str, str]) -> list[str]:
    """Rows: methods (`rows` maps each to its title); columns: zero-shot (for the zero-shot row) and
    each shot count; cells: the figures' `value` in %."""
    shots = report.configuration["protocol"]["shots"]
    columns = ([ZERO_SHOT_SHOTS] if ZERO_SHOT in rows else []) + shots
    cells = {(f.method, f.shots): getattr(f, value) for f in report.results}
    lines = [
        "| method | " + " | ".join("zero-shot" if n == ZERO_SHOT_SHOTS else f"{n}-shot" for n in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for method, title in rows.items():
        lines.append(f"| {title} | " + " | ".join(percent(cells.get((method, n))) for n in columns) + " |")
    return lines


def titled(methods: list[str], protocol: dict[str, Any]) -> dict[str, str]:
    return {method: method_title(method, protocol) for method in methods}


def timing_table(report: EvalReport) -> list[str]:
    protocol = report.configuration["protocol"]
    lines = ["| method | shots | encode | retrieve | rank | total |", "|---|---|---|---|---|---|"]
    for f in report.results:
        ms = [f"{1000 * f.seconds_per_image[s]:.1f}" for s in ("encode_s", "retrieve_s", "rank_s", "total_s")]
        lines.append(f"| {method_title(f.method, protocol)} | {f.shots} | " + " | ".join(ms) + " |")
    return lines


def render_markdown(report: EvalReport) -> str:
    """The report as Markdown: warning, weights, data, the accuracy tables, timings, definitions."""
    cfg = report.configuration
    data, protocol = cfg["dataset"], cfg["protocol"]
    methods = protocol["methods"]
    image_methods = [m for m in methods if m != ZERO_SHOT]
    lines = [f"# {report.title}", ""]
    if report.warning:
        lines += [f"> **⚠ {report.warning}**", ""]
    lines += [f"> **⚠ {warning}**\n" for warning in report.shot_warnings]
    lines += [
        f"- Weights: CLIP {report.weights.clip}"
        + (f"; ranker {report.weights.ranker}" if report.weights.ranker else ""),
        f"- Data: {data['name']} ({data['format']} layout): {data['classes']} classes, {data['train_images']} train / "
        f"{data['test_images']} test images; {data['queries']} queries ({data['query_selection']})",
        f"- Protocol: shot sampler {protocol['shot_sampler'].split(':')[0]}, seed {protocol['seed']}, "
        f"k = {protocol['k']}, rank mode {protocol['rank_mode']}"
        + (", ICL prompt" if protocol["icl"] else "")
        + f"; chance top-1 = {100 * report.chance_top1:.1f}%",
        f"- Run: {report.run['queries_computed']} answers computed, {report.run['queries_reused']} reused from an "
        f"earlier run; {len(report.skipped_images)} unreadable images skipped",
        "",
        "## Top-1 accuracy (%)",
        "",
        *shots_table(report, "top1", titled(methods, protocol)),
        "",
        "## Top-5 accuracy (%)",
        "",
        *shots_table(report, "top5", titled([m for m in methods if m != "oracle@k"], protocol)),
    ]
    recall_rows = {ZERO_SHOT: "class-name text memory"} if ZERO_SHOT in methods else {}
    if image_methods:  # they share one retrieval per shot count
        recall_rows[image_methods[0]] = "n-shot image memory"
    lines += ["", f"## Retrieval recall@{protocol['k']} (%)", "", *shots_table(report, "recall_at_k", recall_rows)]
    if "rar" in methods:
        rows = {m: method_title(m, protocol) for m in methods if m in ("rar", "rar+adapter")}
        lines += ["", "## Ranker fallback rate (%)", "", *shots_table(report, "fallback_rate", rows)]
    lines += ["", "## Milliseconds per image", "", *timing_table(report), "", "## Definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in report.definitions.items()]
    return "\n".join(lines) + "\n"


# -- plot ----------------------------------------------------------------------------------------
def plot_accuracy(report: EvalReport, path: Path) -> Path:
    """Top-1 accuracy against shots, one line per method; zero-shot and chance as horizontal lines."""
    from matplotlib.figure import Figure

    protocol = report.configuration["protocol"]
    figure = Figure(figsize=(7.5, 5), layout="constrained")
    axes = figure.add_subplot()
    for method in protocol["methods"]:
        points = sorted((f.shots, 100 * f.top1) for f in report.results if f.method == method)
        if not points:
            continue
        if method == ZERO_SHOT:
            axes.axhline(points[0][1], linestyle="--", color="grey", label=method_title(method, protocol))
        else:
            axes.plot(*zip(*points), marker="o", label=method_title(method, protocol))
    axes.axhline(100 * report.chance_top1, linestyle=":", color="black", linewidth=1, label="chance")
    axes.set_xscale("log", base=2)
    axes.set_xticks(protocol["shots"], [str(n) for n in protocol["shots"]])
    axes.set_xlabel("shots per class")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small")
    ranker = f"\nranker {report.weights.ranker}" if report.weights.ranker else ""
    figure.suptitle(f"{report.title}\nCLIP {report.weights.clip}{ranker}", fontsize="medium")
    if report.warning:
        axes.text(
            0.5, 0.5, "TEST WEIGHTS\nnot a result", transform=axes.transAxes, fontsize=22,
            color="red", alpha=0.6, ha="center", va="center", rotation=20, fontweight="bold",
        )  # fmt: skip
    figure.savefig(path, dpi=110)
    return path


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and accuracy.png in `out_dir`; returns their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / REPORT_JSON, "markdown": out_dir / REPORT_MARKDOWN, "plot": out_dir / REPORT_PLOT}
    paths["json"].write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    plot_accuracy(report, paths["plot"])
    return paths
