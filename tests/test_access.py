"""What the server may read: allowed folders, opt-in http(s) URLs with limits, no other network use;
and callers' strings stay data (never a path, a shell command or unquoted prompt text)."""

from __future__ import annotations

import ast
import asyncio
import io
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.errors import ImageInputError
from rar_tools.images import ImageLimits, load_image
from rar_tools.settings import Settings

PACKAGE = Path(__file__).resolve().parent.parent / "rar_tools"


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


# --- allowed folders -------------------------------------------------------------------------


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    """`allowed/` holding one image, beside an `outside/` folder holding another."""
    (tmp_path / "allowed").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "in.png").write_bytes(png_bytes())
    (tmp_path / "outside" / "out.png").write_bytes(png_bytes())
    return tmp_path / "allowed"


def only(folder: Path) -> ImageLimits:
    return ImageLimits(allowed_dirs=(folder.resolve(),))


def test_a_path_inside_an_allowed_folder_is_read(allowed: Path) -> None:
    assert load_image(str(allowed / "in.png"), only(allowed)).image.size == (16, 12)


def test_a_path_outside_the_allowed_folders_is_refused(allowed: Path) -> None:
    with pytest.raises(ImageInputError, match="outside the folders this server may read"):
        load_image(str(allowed.parent / "outside" / "out.png"), only(allowed))


def test_dot_dot_cannot_climb_out_of_an_allowed_folder(allowed: Path) -> None:
    with pytest.raises(ImageInputError, match="outside the folders"):
        load_image(f"{allowed}/../outside/out.png", only(allowed))


def test_a_symlink_pointing_out_of_an_allowed_folder_is_refused(allowed: Path) -> None:
    (allowed / "link.png").symlink_to(allowed.parent / "outside" / "out.png")
    with pytest.raises(ImageInputError, match="outside the folders"):
        load_image(str(allowed / "link.png"), only(allowed))


def test_a_symlinked_folder_pointing_out_is_refused(allowed: Path) -> None:
    (allowed / "escape").symlink_to(allowed.parent / "outside", target_is_directory=True)
    with pytest.raises(ImageInputError, match="outside the folders"):
        load_image(str(allowed / "escape" / "out.png"), only(allowed))


def test_a_symlink_that_stays_inside_is_read(allowed: Path) -> None:
    (allowed / "alias.png").symlink_to(allowed / "in.png")
    assert load_image(str(allowed / "alias.png"), only(allowed)).source_path == str(allowed / "in.png")


def test_a_refusal_does_not_reveal_whether_the_file_exists(allowed: Path) -> None:
    messages = []
    for name in ("out.png", "new.png"):  # same length, so the messages differ only by the name
        with pytest.raises(ImageInputError) as refused:
            load_image(str(allowed.parent / "outside" / name), only(allowed))
        messages.append(str(refused.value).replace(name, "NAME"))
    assert messages[0] == messages[1]


def test_without_allowed_folders_any_readable_path_is_accepted(allowed: Path) -> None:
    assert load_image(str(allowed.parent / "outside" / "out.png")).image.size == (16, 12)


def test_the_api_applies_the_allow_dir_setting(allowed: Path, clip_model: str) -> None:
    tools = RarTools(Settings(data_dir=allowed.parent / "data", clip_model=clip_model, allow_dir=[allowed]))
    assert tools.load(str(allowed / "in.png")).image.size == (16, 12)
    with pytest.raises(ImageInputError, match="outside the folders"):
        tools.load(str(allowed.parent / "outside" / "out.png"))


def swap_file_for_symlink(target: Path, outside: Path, stop: threading.Event) -> None:
    """Until `stop`: replace `target` (a file) by a symlink to `outside`, then put the file back."""
    spare = target.with_name(".spare")
    os.link(target, spare)
    while not stop.is_set():
        os.symlink(outside, target.with_name(".link"))
        os.replace(target.with_name(".link"), target)
        os.link(spare, target.with_name(".file"))
        os.replace(target.with_name(".file"), target)


def swap_folder_for_symlink(target: Path, outside: Path, stop: threading.Event) -> None:
    """Until `stop`: move the folder `target` aside, put a symlink to the folder `outside` in its
    place, then move the folder back."""
    aside = target.with_name(".aside")
    while not stop.is_set():
        os.rename(target, aside)
        os.symlink(outside, target, target_is_directory=True)
        os.unlink(target)
        os.rename(aside, target)
        time.sleep(0.0002)  # the folder stays in place a moment, so reads also land between the swaps


def race(target: Path, limits: ImageLimits, swapper: threading.Thread, stop: threading.Event) -> list[tuple]:
    """The colours of the reads of `target` that succeeded while `swapper` ran: 5000 attempts, and
    more (up to 50,000) until one has succeeded, as a busy machine can starve the reads between swaps."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads finely: the old check-then-open lost ~20 in 5000
    swapper.start()
    colours = []
    try:
        for attempt in range(50_000):
            if attempt >= 5000 and colours:
                break
            try:
                colours.append(load_image(str(target), limits).image.getpixel((0, 0)))
            except ImageInputError:
                continue
    finally:
        stop.set()
        swapper.join()
        sys.setswitchinterval(interval)
    return colours


SECRET = (30, 200, 30)


def test_a_file_swapped_for_a_symlink_while_opening_is_never_read_outside(allowed: Path) -> None:
    (allowed.parent / "outside" / "secret.png").write_bytes(png_bytes(SECRET))
    stop = threading.Event()
    target = allowed / "in.png"
    swapper = threading.Thread(
        target=swap_file_for_symlink, args=(target, target.parent.parent / "outside" / "secret.png", stop)
    )
    colours = race(target, only(allowed), swapper, stop)
    assert SECRET not in colours
    assert colours  # the race was run: the allowed file was read between the swaps


def test_a_folder_swapped_for_a_symlink_while_opening_is_never_read_outside(allowed: Path) -> None:
    (allowed / "sub").mkdir()
    (allowed / "sub" / "in.png").write_bytes(png_bytes())
    (allowed.parent / "outside" / "in.png").write_bytes(png_bytes(SECRET))
    stop = threading.Event()
    swapper = threading.Thread(target=swap_folder_for_symlink, args=(allowed / "sub", allowed.parent / "outside", stop))
    colours = race(allowed / "sub" / "in.png", only(allowed), swapper, stop)
    assert SECRET not in colours
    assert colours


def test_an_allowed_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        Settings(data_dir=tmp_path, allow_dir=[tmp_path / "missing"])


# --- image URLs ------------------------------------------------------------------------------

ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/bird.png": (200, {"Content-Type": "image/png"}, png_bytes((30, 60, 220))),
    "/declared-big.png": (200, {"Content-Type": "image/png", "Content-Length": "999999999"}, b""),
    "/to-bird": (302, {"Location": "/bird.png"}, b""),
    "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/text": (200, {"Content-Type": "text/plain"}, b"hello, not pixels"),
}


class ImageHandler(BaseHTTPRequestHandler):
    """Canned routes, plus `/endless` (bytes until the client hangs up, no length), `/drip` (one
    byte of body every 0.2 s) and `/drip-status` (the status line and headers one byte at a time)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            if self.path == "/drip-status":  # the status line itself, one byte every 0.3 s
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
                return
            if self.path in ("/endless", "/drip"):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                endless = self.path == "/endless"
                for _ in range(400):
                    self.wfile.write(b"\x89" * (65536 if endless else 1))
                    self.wfile.flush()
                    time.sleep(0 if endless else 0.2)
                return
            status, headers, body = ROUTES.get(self.path, (404, {}, b"not found"))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_site() -> Iterator[str]:
    """Base URL of a local HTTP server on 127.0.0.1 serving `ROUTES`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


URLS_ALLOWED = ImageLimits(max_bytes=100_000, allow_urls=True, url_timeout_s=1.0)


def test_urls_are_not_fetched_unless_allowed(image_site: str) -> None:
    with pytest.raises(ImageInputError, match="--allow-urls"):
        load_image(f"{image_site}/bird.png")


def test_an_allowed_url_is_fetched_and_decoded(image_site: str) -> None:
    loaded = load_image(f"{image_site}/bird.png", URLS_ALLOWED)
    assert loaded.image.getpixel((0, 0)) == (30, 60, 220) and loaded.source_path == f"{image_site}/bird.png"


def test_a_url_is_fetched_when_the_api_is_called_from_inside_an_event_loop(image_site: str) -> None:
    async def load_from_async_code() -> tuple:
        return load_image(f"{image_site}/bird.png", URLS_ALLOWED).image.getpixel((0, 0))

    assert asyncio.run(load_from_async_code()) == (30, 60, 220)


def test_redirects_to_http_are_followed(image_site: str) -> None:
    assert load_image(f"{image_site}/to-bird", URLS_ALLOWED).image.size == (16, 12)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/to-file", "only http and https URLs are fetched"),
        ("/loop", "redirected more than 3 times"),
        ("/missing", "answered HTTP 404"),
        ("/declared-big.png", "has 999999999 bytes; the limit is 100000"),
        ("/endless", "sent more than the limit of 100000 bytes"),
        ("/drip", "did not finish within 1 s"),
        ("/drip-status", "did not finish within 1 s"),
        ("/text", r"^image URL 'http://127\.0\.0\.1:\d+/text' is not an image format Pillow can decode$"),
    ],
    ids=[
        "redirect-to-file",
        "redirect-loop",
        "not-found",
        "declared-too-big",
        "streamed-too-big",
        "too-slow",
        "status-line-dripped",
        "text",
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(image_site: str, path: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageInputError, match=expected):
        load_image(image_site + path, URLS_ALLOWED)
    assert time.monotonic() - started < 8  # the 1 s limit cut it short: the slow routes take 12 s or more


def test_an_unreachable_url_is_a_clear_error() -> None:
    with pytest.raises(ImageInputError, match="could not be fetched"):
        load_image("http://127.0.0.1:9/bird.png", URLS_ALLOWED)  # port 9 (discard): nothing listens


# --- no network at run time ------------------------------------------------------------------


class ConnectionRecorder:
    """Records every socket connection and name lookup this process makes while `on` (audit hooks
    cannot be removed, so the hook stays installed but idle afterwards)."""

    def __init__(self) -> None:
        self.on = False
        self.events: list[tuple[str, object]] = []
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple) -> None:
        if self.on and event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
            self.events.append((event, args[1] if event == "socket.connect" else args[0]))


def test_loading_adding_retrieving_and_ranking_open_no_network_connection(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, image_folder: Path
) -> None:
    recorder = ConnectionRecorder()
    recorder.on = True
    try:
        tools = RarTools(
            Settings(data_dir=tmp_path / "data", clip_model=clip_model, ranker_model=str(tiny_models_dir / "mllm"))
        )
        tools.add_images("m", [str(image_folder / "red" / "0.png")], "red")
        tools.add_labels("m", ["green", "blue"])
        tools.retrieve("m", str(image_folder / "red" / "1.png"), k=2)
        tools.rank(str(image_folder / "red" / "1.png"), ["red", "green"])
        tools.list_memories()
        tools.close()
    finally:
        recorder.on = False
    assert recorder.events == []


# --- callers' strings stay data ---------------------------------------------------------------

HOSTILE_LABEL = '../../../evil\'; rm -rf ~ $(touch pwned) `id` "quoted" | cat /etc/passwd'


def test_a_hostile_label_never_becomes_a_path(tools: RarTools, image_folder: Path, tmp_path: Path) -> None:
    before = set(tmp_path.rglob("*"))
    result = tools.add_images("m", [str(image_folder / "red" / "0.png")], HOSTILE_LABEL)
    created = set(tmp_path.rglob("*")) - before
    assert created and all(path.is_relative_to(tools.store.data_dir) for path in created)
    stored = next(iter(tools.store.entries("m", result.entry_ids).values()))
    assert stored.label == HOSTILE_LABEL
    assert stored.image_path.name == f"{stored.sha256}.jpg"  # content-addressed, label-free
    assert not any("evil" in path.name or "pwned" in path.name for path in created)


def calls_in(module: Path) -> set[str]:
    """Dotted names of everything called in a module (`subprocess.run`, `os.system`, ...)."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


# The benchmark times start-up from spawn (`rar-tools serve` to `initialize`, `rar-tools --help`); only
# the CLI's `bench` command reaches it (tests/test_import_boundaries.py), never a tool or the API.
# The bundle build runs the MCPB tool (`npx @anthropic-ai/mcpb pack`); only `python -m rar_tools.release`
# reaches it (tests/test_import_boundaries.py).
SPAWN_ALLOWED = {
    "bench/startup.py": {"subprocess.Popen", "subprocess.run"},  # servers and --help, timed from spawn
    "bench/threads.py": {"subprocess.Popen"},  # the busy-loop process that competes for the CPU
    "release/bundle.py": {"subprocess.run"},
}


def test_no_module_starts_a_shell_or_a_process() -> None:
    forbidden = {"os.system", "os.popen", "subprocess.run", "subprocess.Popen", "subprocess.call", "eval", "exec"}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        found[name] = (calls_in(path) & forbidden) - SPAWN_ALLOWED.get(name, set())
    assert {name: calls for name, calls in found.items() if calls} == {}
