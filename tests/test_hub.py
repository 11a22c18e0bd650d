"""The Hugging Face Hub is asked once whether it answers; when it does not, models load from the local
cache at once and a missing one fails fast, saying why. Real sockets and a real local HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port
from huggingface_hub import constants

from rar_tools.errors import ModelLoadError
from rar_tools.hub import HubAccess, clip_needs_hub, is_local, probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process out of offline mode (the test suite runs with HF_HUB_OFFLINE=1), restored afterwards."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def answering_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A local HTTP server as the Hub's endpoint; yields the list of requests it received."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (the http.server hook's name)
            received.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield received
    server.shutdown()
    server.server_close()


def test_local_folders_files_and_no_weights_need_no_hub(tmp_path: Path) -> None:
    assert is_local(f"local-dir:{tmp_path}") and is_local(str(tmp_path)) and is_local("none") and is_local(None)
    assert not is_local("Qwen/Qwen2.5-VL-3B-Instruct") and not is_local("hf-hub:timm/x")
    assert clip_needs_hub("ViT-B-16", "openai") and clip_needs_hub("hf-hub:timm/x", None)
    assert not clip_needs_hub("ViT-B-16", "none") and not clip_needs_hub(f"local-dir:{tmp_path}", None)
    assert not clip_needs_hub("ViT-B-16", str(tmp_path))


def test_an_unreachable_hub_switches_to_the_local_cache_with_one_warning(
    online: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    hub = HubAccess()
    threads = [threading.Thread(target=hub.check) for _ in range(3)]  # three loaders at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hub.unreachable and constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "does not answer" in caplog.text and "HF_HUB_OFFLINE=1" in caplog.text


def test_an_answering_hub_is_asked_once_and_left_online(online: None, answering_hub: list[str]) -> None:
    hub = HubAccess()
    hub.check()
    hub.check()
    assert answering_hub == ["/"] and hub.unreachable is None and not constants.HF_HUB_OFFLINE


def test_offline_mode_skips_the_check(monkeypatch: pytest.MonkeyPatch, answering_hub: list[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    HubAccess().check()
    assert answering_hub == []


def test_a_hub_that_drips_its_answer_counts_as_not_answering_within_the_probe_s_time() -> None:
    class Dripping(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (the http.server hook's name)
            try:
                for byte in b"HTTP/1.1 200 OK\r\n\r\n":  # each byte well within a per-read timeout
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the probe gave up, as it should

    server = ThreadingHTTPServer(("127.0.0.1", 0), Dripping)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        assert probe(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=1.0) == "no answer within 1 s"
        assert time.monotonic() - started < 6  # cut short: the whole answer would have taken 9 s
    finally:
        server.shutdown()
        server.server_close()


def test_a_load_error_says_the_hub_did_not_answer(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    hub = HubAccess()
    with pytest.raises(ModelLoadError) as raised:
        with hub.loading(True, "the ranker model 'org/model'", "--ranker-model"):
            raise ModelLoadError("no file in the cache")
    message = str(raised.value)
    assert message.startswith("could not load the ranker model 'org/model' from the local cache")
    assert "does not answer" in message and "--ranker-model" in message and "no file in the cache" in message


def test_the_default_clip_fails_within_seconds_when_the_hub_does_not_answer(tmp_path: Path) -> None:
    """The real default CLIP (ViT-B-16, OpenAI weights) with an empty cache and a Hub address where
    nothing listens: before, five retries per file with growing pauses took about a minute."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "rar_tools", "add-labels", "m", "a", "--data-dir", str(tmp_path / "data")]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert "rar-tools: could not load the CLIP model 'ViT-B-16' (weights openai) from the local cache" in done.stderr
    assert "[Retry" not in done.stderr and done.stderr.count("WARNING rar_tools.hub") == 1
    assert elapsed < 30, f"{elapsed:.0f} s"


def after_cli_logging(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter after the CLI has configured logging."""
    setup = "from rar_tools.cli import configure_logging\nconfigure_logging('INFO')\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", setup + code], env=env, capture_output=True, text=True)


def test_hub_library_warnings_are_printed_once() -> None:
    done = after_cli_logging(
        "from huggingface_hub.utils import logging\n"
        "logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
    )
    assert done.returncode == 0 and done.stderr.count("Retrying in 1s") == 1, done.stderr


def test_configuring_the_cli_logging_imports_no_model_library() -> None:
    done = after_cli_logging(
        "import sys\nprint(sorted(m for m in ('torch', 'transformers', 'open_clip', 'chromadb') if m in sys.modules))\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
