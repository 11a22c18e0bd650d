"""`rar-tools serve` stops when told to: stdin closed, SIGINT (Ctrl-C), SIGTERM; promptly, with status
0, no traceback, and the data folder free for the next process. Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from conftest import free_port, make_image, wait_for_http_server

from rar_tools.bench.startup import Stopped, stop_server, tool_call
from rar_tools.cli import main
from rar_tools.locking import lock_data_dir, unlock_data_dir

REPEATS = 15  # a failure seen once in 5 runs slips through 15 runs with probability 0.8**15 < 4 %


def serve_command(data_dir: Path, clip_model: str, tiny_models_dir: Path) -> list[str]:
    """`rar-tools serve` over stdio with the tiny CLIP and the tiny ranker: both still loading when
    the first requests arrive."""
    return [
        *(sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(data_dir)),
        *("--clip-model", clip_model, "--ranker-model", str(tiny_models_dir / "mllm")),
    ]


def child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def assert_clean_exit(stopped: Stopped, within_s: float) -> None:
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr and "terminate called" not in stopped.stderr, stopped.stderr[-2000:]
    assert stopped.seconds < within_s, f"exited {stopped.seconds:.2f} s after the stop"


def assert_folder_is_free(data_dir: Path) -> None:
    """Another process (this one) can take the data folder at once."""
    unlock_data_dir(lock_data_dir(data_dir, wait_s=0))


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_server_within_two_seconds(
    how: str, tmp_path: Path, clip_model: str, tiny_models_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    stopped = stop_server(serve_command(data_dir, clip_model, tiny_models_dir), child_env(), how)
    assert_clean_exit(stopped, within_s=2.0)
    assert f"stopping on {how}" in stopped.stderr
    assert_folder_is_free(data_dir)


def test_closing_stdin_ends_the_server_within_a_second_while_models_load(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    call = tool_call(2, "list_memories", {})
    stopped = stop_server(serve_command(data_dir, clip_model, tiny_models_dir), child_env(), "stdin", [call])
    assert_clean_exit(stopped, within_s=1.0)
    assert "the client closed the connection" in stopped.stderr
    assert "WARNING" not in stopped.stderr, stopped.stderr[-2000:]  # nothing was written: nothing to warn of
    assert_folder_is_free(data_dir)


def test_closing_stdin_with_tool_calls_in_flight_always_exits_cleanly(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path
) -> None:
    """Requests that wait for the loading models, then stdin closed at once, again and again: never
    an abort, never longer than the 2 s a host waits before SIGTERM."""
    image = str(make_image(tmp_path / "red.png", "red", seed=1))
    calls = [
        tool_call(2, "add_to_memory", {"memory": "m", "label": "red", "images": [image]}),
        tool_call(3, "recognize", {"memory": "m", "image": image}),
    ]
    for attempt in range(REPEATS):
        command = serve_command(tmp_path / f"data-{attempt}", clip_model, tiny_models_dir)
        assert_clean_exit(stop_server(command, child_env(), "stdin", calls), within_s=2.0)


def test_sigint_stops_the_http_server_without_a_traceback(tmp_path: Path, clip_model: str) -> None:
    port = free_port()
    command = [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(tmp_path / "data"), "--no-ranker"]
    command += ["--clip-model", clip_model, "--transport", "http", "--port", str(port)]
    with (tmp_path / "server.log").open("w+") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=child_env())
        try:
            anyio.run(wait_for_http_server, f"http://127.0.0.1:{port}/mcp", process, time.monotonic() + 90)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.seek(0)
        text = log.read()
    assert "Traceback" not in text and "stopping on SIGINT" in text, text[-2000:]
    assert_folder_is_free(tmp_path / "data")


def test_a_refused_serve_leaves_the_callers_signal_handlers_alone(tmp_path: Path, clip_model: str) -> None:
    """`main(["serve", ...])` in-process, refused because another process holds the folder: the
    calling process's Ctrl-C and SIGTERM handlers are as they were (whatever they were: a process
    started in the background by a shell begins with SIGINT ignored)."""
    data_dir = tmp_path / "data"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER, str(data_dir)], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["serve", "--data-dir", str(data_dir), "--clip-model", clip_model, "--no-ranker"]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


HOLD_FOLDER = """
import sys, time
from pathlib import Path
from rar_tools.locking import lock_data_dir
lock_data_dir(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""
