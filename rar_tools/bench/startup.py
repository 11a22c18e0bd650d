"""Start and stop, measured from outside: how long a desktop host waits for the server, for `--help`,
and for the server to exit when it is told to stop.

- initialize: seconds from spawning `python -m rar_tools serve --no-ranker ...` (stdio, the run's
  CLIP settings, a fresh data folder) until the `initialize` response arrives on its stdout. The
  request is written to the pipe at spawn, as a host does, over raw newline-delimited JSON-RPC (no
  client library start-up counted). The server loads CLIP in the background, so the figure is the
  interpreter, the imports and the server's construction.
- help: wall time of `rar-tools --help` (the console script beside this interpreter, else
  `python -m rar_tools --help`).
- stop on stdin close / SIGINT: seconds from closing the server's stdin (how a host ends a session)
  or sending it SIGINT (Ctrl-C), right after its `initialize` response and an `add_to_memory` call
  that waits for CLIP, until the process has exited: `rar-tools serve` with the run's CLIP and
  ranker, both still loading then, and the call in flight, as when a host closes a session early.

Each is the median of `SPAWNS` fresh processes. Every process gets a deadline and is killed after.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from mcp.types import LATEST_PROTOCOL_VERSION

import rar_tools
from rar_tools.bench.report import Target
from rar_tools.settings import Settings

SPAWNS = 3
INITIALIZE_TARGET_S = 1.5
HELP_TARGET_S = 1.0
STOP_TARGETS_S = {"stdin": 1.0, "SIGINT": 2.0, "SIGTERM": 2.0}  # hosts wait 2 s after closing stdin, then SIGTERM
INITIALIZE_TIMEOUT_S = 60.0  # desktop hosts give up on `initialize` after about a minute
HELP_TIMEOUT_S = 30.0
EXIT_GRACE_S = 5.0
STDERR_TAIL_CHARS = 800
INITIALIZE_ID = 1
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
StopHow = Literal["stdin", "SIGINT", "SIGTERM"]
WAITING_CALL = {  # a call that waits for CLIP: in flight when the server is told to stop
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "add_to_memory", "arguments": {"memory": "stop-test", "labels": ["a label"]}},
}


def child_env() -> dict[str, str]:
    """This environment, offline, importing the same rar_tools source as this process."""
    source = str(Path(rar_tools.__file__).resolve().parent.parent)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }


def model_flags(settings: Settings) -> list[str]:
    """The `rar-tools` flags that give a child process this run's CLIP and device."""
    return [
        *("--clip-model", settings.clip_model, "--clip-pretrained", str(settings.clip_pretrained)),
        *("--clip-precision", settings.clip_precision, "--device", settings.device),
    ]


def serve_command(settings: Settings, data_dir: Path, ranker: bool = False) -> list[str]:
    """`rar-tools serve` over stdio with the run's CLIP, and its ranker if `ranker` (else none)."""
    command = [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(data_dir), *model_flags(settings)]
    return command + (["--ranker-model", settings.ranker_model] if ranker else ["--no-ranker"])


def help_command() -> list[str]:
    """`rar-tools --help`: the installed console script of this interpreter, else `python -m rar_tools`."""
    script = Path(sys.executable).with_name("rar-tools.exe" if os.name == "nt" else "rar-tools")
    return [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "rar_tools", "--help"]


def initialize_request() -> bytes:
    """One JSON-RPC `initialize` request, newline-terminated, as the stdio transport frames it."""
    params = {
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "rar-tools-bench", "version": rar_tools.__version__},
    }
    message = {"jsonrpc": "2.0", "id": INITIALIZE_ID, "method": "initialize", "params": params}
    return (json.dumps(message) + "\n").encode()


def read_lines(stream: IO[bytes], lines: queue.Queue) -> None:
    """Put each line of `stream` on `lines`, then None at end of stream."""
    for line in iter(stream.readline, b""):
        lines.put(line)
    lines.put(None)


def await_response(lines: queue.Queue, deadline: float) -> dict[str, Any]:
    """The first JSON-RPC message answering `initialize`; TimeoutError past `deadline`."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("no initialize response")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError("the server closed its stdout before answering initialize")
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not a protocol message; the e2e tests check stdout carries only those
        if isinstance(message, dict) and message.get("id") == INITIALIZE_ID:
            return message


def stop(process: subprocess.Popen, reader: threading.Thread | None = None) -> None:
    """Close the server's stdin (its signal to exit), kill it if it has not exited in time, then
    let the stdout reader finish and close the pipe."""
    try:
        if process.stdin:
            process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=EXIT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=EXIT_GRACE_S)
    if reader is not None:
        reader.join(timeout=EXIT_GRACE_S)
    if process.stdout and (reader is None or not reader.is_alive()):
        process.stdout.close()


@dataclass
class Spawned:
    """A server process that has answered `initialize`, with its stdout lines and stderr file."""

    process: subprocess.Popen
    lines: queue.Queue
    stderr: IO[bytes]
    initialize_s: float

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        self.process.stdin.write(b"".join((json.dumps(m) + "\n").encode() for m in messages))
        self.process.stdin.flush()

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")


@contextmanager
def spawned_server(
    command: list[str], env: dict[str, str], timeout_s: float = INITIALIZE_TIMEOUT_S
) -> Iterator[Spawned]:
    """Spawn `command` with `initialize` written at once; yields when the response has arrived, and
    stops the process (stdin closed, then killed past `EXIT_GRACE_S`) afterwards."""
    lines: queue.Queue = queue.Queue()
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env)
        reader = threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True)
        try:
            reader.start()
            process.stdin.write(initialize_request())
            process.stdin.flush()
            try:
                response = await_response(lines, start + timeout_s)
            except (TimeoutError, RuntimeError) as exc:
                raise RuntimeError(f"{exc} within {timeout_s:g} s{stderr_tail(stderr)}") from exc
            elapsed = time.perf_counter() - start
            if "result" not in response:
                raise RuntimeError(f"initialize was refused: {response.get('error')}")
            yield Spawned(process, lines, stderr, elapsed)
        finally:
            stop(process, reader)


def seconds_to_initialize(command: list[str], env: dict[str, str], timeout_s: float = INITIALIZE_TIMEOUT_S) -> float:
    """Seconds from spawning `command` until its `initialize` response arrives on stdout."""
    with spawned_server(command, env, timeout_s) as server:
        return server.initialize_s


@dataclass(frozen=True)
class Stopped:
    """How a server process ended: seconds from the stop to its exit, its status and its stderr."""

    seconds: float
    returncode: int
    stderr: str


def stop_server(
    command: list[str], env: dict[str, str], how: StopHow, messages: Sequence[dict[str, Any]] = ()
) -> Stopped:
    """Spawn `command`, wait for its `initialize` response, send `messages`, then stop it `how`
    (close its stdin, or send the signal) and time its exit, killing it past `EXIT_GRACE_S`."""
    with spawned_server(command, env) as server:
        server.send([INITIALIZED, *messages])
        start = time.perf_counter()
        if how == "stdin":
            server.process.stdin.close()
        else:
            server.process.send_signal(getattr(signal, how))
        try:
            server.process.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"still running {EXIT_GRACE_S:g} s after {how}{stderr_tail(server.stderr)}") from exc
        return Stopped(time.perf_counter() - start, server.process.returncode, server.stderr_text())


def seconds_to_stop(command: list[str], env: dict[str, str], how: StopHow) -> float:
    """Seconds until a server that has just answered `initialize`, and been sent a tool call that
    waits for the loading CLIP, exits after `how`; an error unless it exits with status 0."""
    stopped = stop_server(command, env, how, [WAITING_CALL])
    if stopped.returncode != 0:
        raise RuntimeError(
            f"exited with status {stopped.returncode} after {how}: {stopped.stderr[-STDERR_TAIL_CHARS:]}"
        )
    return stopped.seconds


def tool_call(request_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC `tools/call` request."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def stderr_tail(stderr: IO[bytes]) -> str:
    """The end of a child's stderr, for an error message ('' when it wrote none)."""
    stderr.seek(0)
    text = stderr.read().decode(errors="replace").strip()
    return f"; its stderr ends: {text[-STDERR_TAIL_CHARS:]}" if text else ""


def seconds_to_help(command: list[str], env: dict[str, str], timeout_s: float = HELP_TIMEOUT_S) -> float:
    """Wall seconds of `command` (a `--help` run), which must exit 0 and print a usage line."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or "usage" not in done.stdout.lower():
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-STDERR_TAIL_CHARS:]}")
    return elapsed


def repeat(measure: Callable[[int], float], spawns: int) -> dict[str, Any]:
    """`spawns` measurements: each one's seconds (None where it failed), their median, and the errors."""
    runs: list[float | None] = []
    errors: list[str] = []
    for index in range(spawns):
        try:
            runs.append(measure(index))
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            runs.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")
    done = [r for r in runs if r is not None]
    return {"runs_s": runs, "median_s": statistics.median(done) if done else None, "errors": errors}


def measure_startup(settings: Settings, work_dir: Path, spawns: int = SPAWNS) -> dict[str, Any]:
    """Start-up and stop figures: spawn to `initialize` (each spawn on a fresh data folder), `--help`,
    and exit after stdin is closed or SIGINT is sent."""
    env = child_env()
    serve = [serve_command(settings, work_dir / f"startup-{i}") for i in range(spawns)]
    initialize = repeat(lambda i: seconds_to_initialize(serve[i], env), spawns)
    help_run = repeat(lambda _: seconds_to_help(help_command(), env), spawns)
    figures = {
        "spawns": spawns,
        "initialize": {**initialize, "command": serve[0], "target_s": INITIALIZE_TARGET_S},
        "help": {**help_run, "command": help_command(), "target_s": HELP_TARGET_S},
    }
    full = [serve_command(settings, work_dir / f"stop-{i}", ranker=True) for i in range(spawns)]
    for how, key in STOPS.items():
        stops = repeat(lambda i, how=how: seconds_to_stop(full[i], env, how), spawns)
        figures[key] = {**stops, "command": full[0], "target_s": STOP_TARGETS_S[how]}
    return figures


STOPS: dict[StopHow, str] = {"stdin": "stop_stdin", "SIGINT": "stop_sigint"}
STARTUP_FIGURES = (
    ("initialize", "serve --no-ranker (stdio): spawn to initialize response"),
    ("help", "rar-tools --help: wall time"),
    ("stop_stdin", "serve, models loading, a call waiting: stdin closed to exit"),
    ("stop_sigint", "serve, models loading, a call waiting: SIGINT to exit"),
)


def startup_rows(startup: dict[str, Any]) -> list[list[str]]:
    """Table rows: what, median, each run, target (and 'failed' where a spawn failed)."""
    rows = []
    for key, what in STARTUP_FIGURES:
        figure = startup[key]
        median = figure["median_s"]
        runs = " ".join("failed" if r is None else f"{r:.2f}" for r in figure["runs_s"])
        rows.append([what, "failed" if median is None else f"{median:.2f}", runs, f"< {figure['target_s']:g}"])
    return rows


def startup_targets(startup: dict[str, Any]) -> tuple[list[Target], list[str]]:
    """A target per figure measured at least once; a note per failed spawn."""
    targets, notes = [], []
    for key, what in STARTUP_FIGURES:
        figure = startup[key]
        if figure["median_s"] is not None:
            name = f"{what}, median of {startup['spawns']}"
            targets.append(Target(name, figure["median_s"], figure["target_s"], False, " s"))
        notes += [f"{key} spawn failed: {error}" for error in figure["errors"]]
    return targets, notes
