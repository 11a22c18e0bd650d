"""`rar-tools bench`: every section runs at tiny sizes with the tiny checkpoints and reports every figure.

No timing is asserted: only that the figures are measured, written and hang together."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rar_tools.bench import SECTIONS, BenchConfig, run_bench
from rar_tools.bench.data import ClusteredSpace, exact_top_labels, label_recall, write_photos
from rar_tools.bench.startup import repeat, seconds_to_initialize
from rar_tools.bench.threads import competing_load
from rar_tools.bench.timing import time_rounds
from rar_tools.cli import main


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, clip_model: str, tiny_models_dir: Path) -> BenchConfig:
    out = tmp_path_factory.mktemp("bench")
    return BenchConfig(
        clip_model=clip_model,
        ranker_model=str(tiny_models_dir / "mllm"),
        device="cpu",
        repeats=2,
        encode_images=4,
        batch_sizes=(1, 4),
        text_labels=6,
        add_images=5,
        sizes=(60, 120),
        labels=30,
        queries=6,
        ks=(5, 10),
        e2e_images=4,
        json_path=out / "bench.json",
        work_dir=out / "work",
    )


@pytest.fixture(scope="module")
def document(config: BenchConfig) -> dict[str, Any]:
    """One full run of every section, read back from the JSON it wrote."""
    run_bench(config, echo=lambda _: None)
    return json.loads(config.json_path.read_text())


def figures(document: dict[str, Any], section: str) -> dict[str, Any]:
    return document["sections"][section]["figures"]


def test_every_section_runs_and_the_json_holds_config_and_environment(document: dict[str, Any]) -> None:
    assert list(document["sections"]) == list(SECTIONS)
    assert document["config"]["device"] == "cpu" and document["config"]["sizes"] == [60, 120]
    assert document["environment"]["cpu_cores"] >= 1 and document["environment"]["versions"]["chromadb"]
    assert document["targets_total"] == sum(len(s["targets"]) for s in document["sections"].values())


def test_encode_reports_images_per_second_per_batch_size_and_text_labels(document: dict[str, Any]) -> None:
    encode = figures(document, "encode")
    assert set(encode["images_per_s"]) == {"1", "4"} and all(r > 0 for r in encode["images_per_s"].values())
    assert encode["speedup_vs_one_at_a_time"]["1"] == 1.0
    assert encode["text_labels"] == 6 and encode["text_labels_per_s"] > 0
    assert document["sections"]["encode"]["targets"][0]["bound"] == 2.0


def test_add_reports_overhead_against_encoding_the_same_images(document: dict[str, Any]) -> None:
    add = figures(document, "add")
    assert add["images"] == 5 and add["add_s"] > 0 and add["encode_s"] > 0
    assert add["overhead_percent"] == pytest.approx(100 * (add["add_s"] - add["encode_s"]) / add["encode_s"])
    assert set(add["stages_s"]) == {"load_s", "copy_s", "chroma_s"}


def test_retrieve_reports_latency_and_recall_per_memory_size(document: dict[str, Any]) -> None:
    sizes = figures(document, "retrieve")["sizes"]
    assert set(sizes) == {"60", "120"}
    for size in sizes.values():
        assert size["cold"]["n"] == size["steady"]["n"] == size["exact"]["n"] == 6
        assert set(size["label_recall_at_k"]) == {"5", "10"} and size["build_s"] > 0


def test_retrieve_reports_faiss_at_each_ef_search_and_listing_times(document: dict[str, Any]) -> None:
    for size in figures(document, "retrieve")["sizes"].values():
        assert size["listing"]["list"]["n"] == 20 and size["listing"]["full_read_s"] > 0
        assert size["mirrored"] and size["mirror_wait_s"] >= 0
        runs = size["faiss"]["by_ef_search"]
        assert set(runs) == {"16", "64", "256"} and all(0 <= r["recall"] <= 1 and r["n"] == 6 for r in runs.values())
    names = [t["name"] for t in document["sections"]["retrieve"]["targets"]]
    assert any(n.startswith("list a memory") for n in names) and any("faiss at equal recall" in n for n in names)


def test_retrieval_from_small_memories_matches_exact_search(document: dict[str, Any]) -> None:
    for size in figures(document, "retrieve")["sizes"].values():
        assert size["label_recall_at_k"] == {"5": 1.0, "10": 1.0}


def test_rank_reports_both_modes_per_k(document: dict[str, Any]) -> None:
    by_k = figures(document, "rank")["by_k"]
    assert set(by_k) == {"5", "10"}
    for row in by_k.values():
        assert row["score"]["n"] == row["generate"]["n"] == 2
        assert row["generate_over_score"] == pytest.approx(row["generate"]["p50_ms"] / row["score"]["p50_ms"])


def test_rank_times_score_mode_variants_side_by_side_with_their_model_calls(document: dict[str, Any]) -> None:
    """Split against joint tokens, and N orders costing 2N model calls (a prompt pass and a batch each)."""
    for k, row in figures(document, "rank")["by_k"].items():
        variants = row["score_variants"]
        orders = {"5": [3, 5], "10": [3, 10]}[k]
        assert list(variants) == ["split", "joint", *(f"joint, {n} orders" for n in orders)]
        assert variants["split"]["over_split"] == 1.0 and all(v["n"] == 2 for v in variants.values())
        assert variants["split"]["model_calls"] == variants["joint"]["model_calls"] == 2
        assert [variants[f"joint, {n} orders"]["model_calls"] for n in orders] == [2 * n for n in orders]


def test_e2e_reports_both_tools_in_process_over_stdio_and_direct(document: dict[str, Any]) -> None:
    e2e = figures(document, "e2e")
    for tool in ("retrieve_candidates", "recognize"):
        assert e2e["api"][tool]["n"] == 2
        for transport in ("in_process", "stdio"):
            assert e2e[transport][tool]["e2e"]["n"] == e2e[transport][tool]["overhead"]["n"] == 2


def test_e2e_reports_start_up_from_spawn_with_targets(document: dict[str, Any]) -> None:
    startup = figures(document, "e2e")["startup"]
    assert startup["spawns"] == 3
    for key, target in (("initialize", 1.5), ("help", 1.0)):
        figure = startup[key]
        assert figure["errors"] == [] and len(figure["runs_s"]) == 3 and all(r > 0 for r in figure["runs_s"])
        assert min(figure["runs_s"]) <= figure["median_s"] <= max(figure["runs_s"]) and figure["target_s"] == target
    assert "--no-ranker" in startup["initialize"]["command"] and startup["help"]["command"][-1] == "--help"
    bounds = {t["name"].split(":")[0]: t["bound"] for t in document["sections"]["e2e"]["targets"]}
    assert bounds["serve --no-ranker (stdio)"] == 1.5 and bounds["rar-tools --help"] == 1.0


def test_e2e_reports_how_fast_the_server_stops(document: dict[str, Any]) -> None:
    startup = figures(document, "e2e")["startup"]
    for key, target in (("stop_stdin", 1.0), ("stop_sigint", 2.0)):
        figure = startup[key]
        assert figure["errors"] == [] and len(figure["runs_s"]) == 3 and all(r > 0 for r in figure["runs_s"])
        assert figure["target_s"] == target
    bounds = {t["name"].split(",")[0]: t["bound"] for t in document["sections"]["e2e"]["targets"]}
    assert bounds["serve"] in (1.0, 2.0) and len(document["sections"]["e2e"]["targets"]) == 6


def test_threads_reports_both_models_at_one_two_and_the_default_idle_and_busy(document: dict[str, Any]) -> None:
    threads = figures(document, "threads")
    assert threads["default_threads"] == {"encoder": 1, "ranker": 1}  # the tiny checkpoints
    for model in ("encoder", "ranker"):
        assert set(threads[model]) == {"1", "2"}
        for by_load in threads[model].values():
            assert set(by_load) == {"idle", "busy"} and all(f["n"] == 2 and f["p50_ms"] > 0 for f in by_load.values())


FAKE_SERVER = """
import json, sys
request = json.loads(sys.stdin.readline())
print("not a protocol line", flush=True)
print(json.dumps({"jsonrpc": "2.0", "id": 99, "result": {}}), flush=True)
print(json.dumps({"jsonrpc": "2.0", "id": request["id"], REPLY}), flush=True)
sys.stdin.read()
"""


def test_initialize_is_timed_to_its_own_response() -> None:
    server = FAKE_SERVER.replace("REPLY", '"result": {"serverInfo": {"name": "fake"}}')
    assert 0 < seconds_to_initialize([sys.executable, "-c", server], dict(os.environ), timeout_s=30) < 30


def test_a_refused_initialize_is_an_error() -> None:
    server = FAKE_SERVER.replace("REPLY", '"error": {"code": -32600, "message": "no"}')
    with pytest.raises(RuntimeError, match="refused"):
        seconds_to_initialize([sys.executable, "-c", server], dict(os.environ), timeout_s=30)


def test_a_server_that_never_answers_is_killed_at_the_deadline() -> None:
    silent = "import sys, time; print('starting', file=sys.stderr, flush=True); time.sleep(120)"
    began = time.perf_counter()
    with pytest.raises(RuntimeError, match="no initialize response within 1 s.*starting"):
        seconds_to_initialize([sys.executable, "-c", silent], dict(os.environ), timeout_s=1)
    assert time.perf_counter() - began < 30


def test_failed_spawns_are_recorded_and_the_median_taken_over_the_rest() -> None:
    def measure(index: int) -> float:
        if index == 1:
            raise RuntimeError("boom")
        return float(index + 1)

    def gone(index: int) -> float:
        raise OSError("no such program")

    assert repeat(measure, 3) == {"runs_s": [1.0, None, 3.0], "median_s": 2.0, "errors": ["RuntimeError: boom"]}
    assert repeat(gone, 2) == {"runs_s": [None, None], "median_s": None, "errors": ["OSError: no such program"] * 2}


def test_bench_command_prints_tables_and_writes_json(
    config: BenchConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "r.json"
    code = main(
        ["bench", "--sections", "retrieve", "--sizes", "50", "--labels", "10", "--queries", "3"]
        + ["--ks", "5", "--json", str(out), "--work-dir", str(tmp_path / "w")]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "== retrieve ==" in printed and "recall@5" in printed
    assert json.loads(out.read_text())["sections"]["retrieve"]["figures"]["sizes"]["50"]["queries"] == 3


def test_sizes_must_be_positive(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--sizes", "0"])
    assert "not a positive integer" in capsys.readouterr().err


def test_clustered_exemplars_lie_near_their_label_centre() -> None:
    rng = np.random.default_rng(0)
    space = ClusteredSpace.create(40, 512, rng)
    labels = np.repeat(np.arange(40), 10)
    cosines = (space.draw(labels, rng) * space.centres[labels]).sum(axis=1)
    assert cosines.mean() == pytest.approx(0.7, abs=0.02)


def test_exact_top_labels_are_distinct_and_ordered_by_best_exemplar() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1]], dtype=np.float32)
    labels = np.array([7, 7, 3, 5])
    assert exact_top_labels(vectors, labels, np.array([1, 0], dtype=np.float32), 3) == [7, 3, 5]


def test_label_recall_counts_shared_labels_out_of_k() -> None:
    assert label_recall(["a", "b", "c"], ["a", "c", "d"], 3) == pytest.approx(2 / 3)


def test_photos_are_distinct_and_rewritten_identically(tmp_path: Path) -> None:
    first = write_photos(tmp_path / "a", 3)
    again = write_photos(tmp_path / "b", 3)
    contents = [Path(p).read_bytes() for p in first]
    assert len(set(contents)) == 3 and contents == [Path(p).read_bytes() for p in again]


def test_resolved_defaults_depend_on_the_device() -> None:
    cpu, gpu = BenchConfig().resolved("cpu"), BenchConfig().resolved("cuda")
    assert (cpu.ranker_model, cpu.batch_sizes) == ("tiny", (1, 4, 32))
    assert (gpu.ranker_model, gpu.batch_sizes) == ("random-qwen2.5-vl-3b", (1, 32, 256))
    assert replace(BenchConfig(), add_images=7).resolved("cpu").add_images == 7


def test_time_rounds_rotates_which_call_goes_first() -> None:
    order: list[tuple[str, int]] = []
    calls = {name: (lambda index, name=name: order.append((name, index))) for name in ("a", "b")}
    seconds = time_rounds(calls, 3)
    assert order == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert [len(v) for v in seconds.values()] == [3, 3]


def test_cuda_is_refused_clearly_where_there_is_none(capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    assert main(["bench", "--device", "cuda", "--sections", "retrieve", "--sizes", "10"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_retrieve_section_runs_on_a_chroma_server(chroma_server: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = main(
        ["bench", "--sections", "retrieve", "--sizes", "40", "--labels", "8", "--queries", "3", "--ks", "5"]
        + ["--chroma-url", chroma_server, "--json", str(out), "--work-dir", str(tmp_path / "w")]
    )
    document = json.loads(out.read_text())
    assert code == 0 and document["config"]["chroma_url"] == chroma_server
    assert document["sections"]["retrieve"]["figures"]["sizes"]["40"]["label_recall_at_k"]["5"] == 1.0


@pytest.fixture(scope="module")
def vision_document(config: BenchConfig) -> dict[str, Any]:
    """The optional segment and describe sections at tiny sizes."""
    tiny = replace(
        config, sections=("segment", "describe"), segment_labels=(1, 3), segment_images=2, json_path=None, repeats=2
    )
    return run_bench(tiny, echo=lambda _: None)


def test_segment_reports_seconds_per_image_and_rounds_per_label_count(vision_document: dict[str, Any]) -> None:
    segment = figures(vision_document, "segment")
    assert segment["images"] == 2 and set(segment["by_labels"]) == {"1", "3"}
    for count, row in segment["by_labels"].items():
        assert row["per_image"]["n"] == 2 and row["per_image"]["p50_ms"] > 0
        assert len(row["rounds"]) == 2 and all(r >= 1 for r in row["rounds"])
        assert 1 <= row["labels_kept_mean"] <= int(count)
    assert segment["by_labels"]["1"]["rounds"] == [1, 1]  # one label is stable at once


def test_describe_reports_milliseconds_per_region_per_view_count(vision_document: dict[str, Any]) -> None:
    describe = figures(vision_document, "describe")
    assert set(describe["by_views"]) == {"1", "2"} and describe["max_new_tokens"] > 0
    assert all(row["n"] == 2 and row["p50_ms"] > 0 for row in describe["by_views"].values())


def test_the_optional_sections_run_only_when_named() -> None:
    from rar_tools.bench.config import OPTIONAL_SECTIONS

    assert set(OPTIONAL_SECTIONS) == {"segment", "describe"} and not set(OPTIONAL_SECTIONS) & set(SECTIONS)


def test_the_competing_load_runs_only_inside_its_block() -> None:
    with competing_load(True, processes=2) as loops:
        assert len(loops) == 2 and all(loop.poll() is None for loop in loops)
    assert all(loop.poll() is not None for loop in loops)
    with competing_load(False) as none:
        assert none == []
