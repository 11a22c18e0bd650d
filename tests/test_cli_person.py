"""The command line as a person uses it: what it prints, how it stops, how it fails. In-process through
`main` where stdout is all that matters; as a subprocess for signals, pipes and terminals."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import anyio
import pytest
from conftest import make_image
from mcp import Client

from rar_tools.api import RarTools
from rar_tools.cli import configure_logging, main
from rar_tools.evaluation.datasets import DatasetError, load_dataset
from rar_tools.server import create_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path: Path, clip_model: str, capsys: pytest.CaptureFixture):
    """Run the CLI in-process with a fresh data dir and the tiny CLIP: (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--data-dir", str(tmp_path / "data"), "--clip-model", clip_model])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def cli_env(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> dict[str, str]:
    """The environment of a `rar-tools` subprocess: this source, the tiny models, unbuffered output."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "RAR_TOOLS_DATA_DIR": str(tmp_path / "data"),
        "RAR_TOOLS_CLIP_MODEL": clip_model,
        "RAR_TOOLS_RANKER_MODEL": str(tiny_models_dir / "mllm"),
        "RAR_TOOLS_LOG_LEVEL": "INFO",
    }


def rar_tools(*args: str) -> list[str]:
    return [sys.executable, "-m", "rar_tools", *args]


def many_labels(root: Path, labels: int, per_label: int) -> Path:
    for label in range(labels):
        for n in range(per_label):
            make_image(root / f"label_{label:02d}" / f"{n}.png", "red", seed=100 * label + n)
    return root


# -- add, remove, delete, memories ---------------------------------------------------------------
def test_add_folder_names_each_skipped_file(run, image_folder: Path) -> None:
    (image_folder / "red" / "broken.jpg").write_text("not an image")
    code, out, _ = run("add", "colours", "--folder", str(image_folder))
    assert code == 0
    assert "red: stored 3 new exemplar image(s); skipped 1 unreadable image(s):" in out
    assert f"  {image_folder / 'red' / 'broken.jpg'}: image file" in out


def test_add_folder_as_json_prints_one_document(run, image_folder: Path) -> None:
    (image_folder / "red" / "broken.jpg").write_text("not an image")
    code, out, _ = run("add", "colours", "--folder", str(image_folder), "--json")
    document = json.loads(out)  # one document: several back to back would not parse
    assert code == 0 and document["created"] and document["added"] == 12 and document["count"] == 12
    assert [entry["label"] for entry in document["labels"]] == ["blue", "green", "red", "yellow"]
    assert [s["source"] for s in document["labels"][2]["skipped"]] == [str(image_folder / "red" / "broken.jpg")]


def test_adding_to_a_new_memory_says_it_creates_it(run, image_folder: Path) -> None:
    red = str(image_folder / "red" / "0.png")
    _, first, _ = run("add", "m", red, "--label", "red")
    _, second, _ = run("add", "m", str(image_folder / "red" / "1.png"), "--label", "red")
    assert first.startswith("created memory 'm' (it did not exist); stored 1 new exemplar image(s)")
    assert "created" not in second


def test_removing_a_label_the_memory_lacks_names_the_closest_and_fails(run) -> None:
    run("add-labels", "birds", "Blue Jay", "Herring Gull", "Robin")
    code, out, err = run("remove", "birds", "--label", "Blue Jya")
    assert code == 2 and out == ""
    assert "memory 'birds' has no label 'Blue Jya'; closest labels: 'Blue Jay'. Nothing was removed" in err
    _, listing, _ = run("memories", "--json")
    assert json.loads(listing)["memories"][0]["count"] == 3


def test_a_memory_can_be_deleted_entirely(run, image_folder: Path) -> None:
    run("add", "m", str(image_folder / "red" / "0.png"), "--label", "red")
    run("add-labels", "keep", "a")
    code, out, _ = run("delete", "m")
    assert code == 0 and out.strip() == "deleted memory 'm' with its 1 entries"
    _, listing, _ = run("memories", "--json")
    assert [m["name"] for m in json.loads(listing)["memories"]] == ["keep"]
    code, _, err = run("delete", "m")
    assert code == 2 and "memory 'm' does not exist" in err


def test_delete_memory_is_a_destructive_tool(tools: RarTools) -> None:
    tools.add_labels("m", ["a", "b"])

    async def delete() -> tuple:
        async with Client(create_server(tools)) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool("delete_memory", {"memory": "m"})
        return listed["delete_memory"], result

    tool, result = anyio.run(delete)
    assert tool.annotations.destructive_hint and not tool.annotations.read_only_hint
    assert not result.is_error and result.structured_content["removed"] == 2
    assert tools.list_memories().memories == []


def test_memories_lists_labels_with_counts_up_to_max_labels(run) -> None:
    run("add-labels", "zs", "a", "b", "c")
    _, out, _ = run("memories")
    assert re.search(r"^ +1  a$", out, re.MULTILINE) and re.search(r"^ +1  c$", out, re.MULTILINE)
    _, out, _ = run("memories", "--max-labels", "1")
    assert "... 2 more label(s) (--max-labels to show more)" in out


# -- recognition output ------------------------------------------------------------------------
def test_recognize_regions_prints_one_answer_per_region(run, tmp_path: Path, tiny_models_dir: Path) -> None:
    scene = str(make_image(tmp_path / "scene.png", "blue", seed=3, size=(120, 80)))
    run("add-labels", "zs", "Herring Gull", "Blue Jay", "Cardinal")
    boxes = ["--box", "0", "0", "40", "40", "--box", "50", "20", "110", "70"]
    code, out, _ = run("recognize-regions", "zs", scene, *boxes, "--ranker-model", str(tiny_models_dir / "mllm"))
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == "2 region(s) of a 120x80 image" and len(lines) == 3
    assert re.match(r"^  1\. \(0, 0, 40, 40\)  (Herring Gull|Blue Jay|Cardinal)  p \d\.\d{3} \(ranked\)$", lines[1])


def test_recognize_labels_the_retrieval_and_ranking_stages(run, image_folder: Path, tiny_models_dir: Path) -> None:
    run("add", "colours", "--folder", str(image_folder))
    code, out, _ = run(
        "recognize", "colours", str(image_folder / "red" / "0.png"), "--ranker-model", str(tiny_models_dir / "mllm")
    )
    assert code == 0 and "\nretrieval (CLIP) from memory 'colours'" in out and "\nranking by transformers:" in out


# -- evaluation data and report ------------------------------------------------------------------
def flat_folder(root: Path) -> Path:
    for colour in ("red", "blue"):
        for n in range(4):
            make_image(root / f"{colour}_thing_{n:04d}.png", colour, seed=n)
    return root


def test_a_flat_folder_reads_labels_from_file_names(tmp_path: Path) -> None:
    dataset = load_dataset(flat_folder(tmp_path / "flat"), split_ratio=0.5, label_pattern=r"^(.+?)_\d+$")
    assert dataset.labels == ["blue_thing", "red_thing"] and (len(dataset.train), len(dataset.test)) == (4, 4)


def test_a_flat_folder_without_a_label_pattern_names_both_routes(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no <label>/ subfolders") as raised:
        load_dataset(flat_folder(tmp_path / "flat"), split_ratio=0.5)
    assert "--label-from-name REGEX" in str(raised.value) and "CSV of path,label" in str(raised.value)


def test_a_label_pattern_that_misses_a_file_names_it(tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "flat")
    make_image(folder / "unnumbered.png", "red", seed=9)
    with pytest.raises(DatasetError, match="finds no label in unnumbered.png"):
        load_dataset(folder, split_ratio=0.5, label_pattern=r"^(.+?)_\d+$")


def test_the_report_of_a_csv_is_titled_after_its_data_set(run, tmp_path: Path) -> None:
    folder = tmp_path / "birds"
    rows = []
    for n, colour in enumerate(["red", "red", "blue", "blue"]):
        make_image(folder / f"{n}.png", colour, seed=n)
        rows.append(f"{n}.png,{colour},{'train' if n % 2 == 0 else 'test'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval"
    code, printed, _ = run(
        "eval", str(folder / "labels.csv"), "--shots", "1", "--methods", "clip-knn", "--out", str(out)
    )
    assert code == 0 and printed.startswith("# RAR evaluation on birds\n")


def test_a_shot_count_above_the_smallest_class_is_flagged(run, labelled_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code, _, err = run("eval", str(labelled_folder), "--shots", "2", "8", "--methods", "clip-knn", "--out", str(out))
    flag = "8-shot: 3 of 3 classes have fewer than 8 train images (the fewest: 4)"
    assert code == 0 and flag in err and flag in (out / "report.md").read_text()
    assert "2-shot:" not in (out / "report.md").read_text().split("## Top-1")[0]


# -- stopping, pipes and terminals (subprocesses) ----------------------------------------------------
def interrupt_after(command: list[str], env: dict[str, str], marker: str, stream: str) -> subprocess.CompletedProcess:
    """Run `command`, send SIGINT once `marker` appears on its `stream`, and collect what it wrote."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = process.stdout if stream == "stdout" else process.stderr
    seen = []
    for line in watched:
        seen.append(line)
        if marker in line:
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    seen_text = "".join(seen)
    return subprocess.CompletedProcess(
        command,
        process.returncode,
        seen_text + out if stream == "stdout" else out,
        seen_text + err if stream == "stderr" else err,
    )


def test_ctrl_c_during_add_folder_stops_between_images_and_the_same_command_continues(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    folder = many_labels(tmp_path / "images", labels=30, per_label=2)
    command = rar_tools("add", "m", "--folder", str(folder))
    stopped = interrupt_after(command, cli_env, "label 00: stored", "stdout")
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    found = re.search(
        r"rar-tools: interrupted after (\d+) of 60 images; run the same command again to continue", stopped.stderr
    )
    assert found and 2 <= int(found.group(1)) < 60
    again = subprocess.run(command + ["--json"], env=cli_env, capture_output=True, text=True, timeout=300)
    document = json.loads(again.stdout)
    assert again.returncode == 0 and document["already_present"] == int(found.group(1)) and document["count"] == 60


def test_ctrl_c_during_eval_says_how_to_resume(tmp_path: Path, cli_env: dict[str, str]) -> None:
    root = tmp_path / "data-set"
    for split, count in (("train", 4), ("test", 40)):
        for c, colour in enumerate(("red", "green", "blue")):
            for n in range(count):
                make_image(root / split / f"{colour}_thing" / f"{n}.png", colour, seed=1000 * c + 10 * n + len(split))
    command = rar_tools("eval", str(root), "--shots", "1", "2", "4", "--out", str(tmp_path / "eval"))
    stopped = interrupt_after(command, cli_env, "zero-shot top-1", "stderr")
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    assert re.search(
        r"rar-tools: interrupted after \d+ of \d+ answers; run the same command again with --resume to continue",
        stopped.stderr,
    )


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, cli_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        rar_tools("memories", "--json"), env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # `| head -0`: nobody reads
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and err == "", err


def test_eval_shows_bars_on_a_terminal_and_summaries_when_piped(
    tmp_path: Path, cli_env: dict[str, str], labelled_folder: Path
) -> None:
    command = rar_tools("eval", str(labelled_folder), "--shots", "1", "2", "--methods", "clip-knn", "--out")
    piped = subprocess.run(command + [str(tmp_path / "a")], env=cli_env, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert "%|" not in piped.stderr
    assert re.search(r"1-shot top-1: clip-knn \d+\.\d%", piped.stderr) and "2-shot top-1: clip-knn" in piped.stderr
    terminal = run_on_terminal(command + [str(tmp_path / "b")], cli_env)
    assert "encoding queries" in terminal and "%|" in terminal


def run_on_terminal(command: list[str], env: dict[str, str], timeout_s: float = 300) -> str:
    """What `command` writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process has exited
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


def test_log_records_follow_stderr_after_a_replaced_stderr_is_closed(capfd: pytest.CaptureFixture) -> None:
    """As when a test captured the output of an in-process `main`: later records still print."""
    replacement, saved = io.StringIO(), sys.stderr
    sys.stderr = replacement
    try:
        configure_logging("INFO")
    finally:
        sys.stderr = saved
    replacement.close()
    logging.getLogger("rar_tools.tests").warning("written after the replacement closed")
    err = capfd.readouterr().err
    assert "written after the replacement closed" in err and "Logging error" not in err
