"""The Hugging Face Hub, checked once per process before the first model that may come from it.

Without `HF_HUB_OFFLINE=1` the model libraries ask the Hub about every file before they look in the
local cache, and retry each question five times with growing pauses: on a machine without network
access the default models took 49 s, and about 90 log lines, to fail. Here, before a model that is
not a local folder loads, one HTTP request (at most `PROBE_TIMEOUT_S`) tells whether the Hub answers.
If it does not, the process switches the libraries to offline mode: cached weights load as they
would with `HF_HUB_OFFLINE=1`, and missing ones fail at once with a message that says why.

Light to import: `huggingface_hub` and `httpx` are imported by the calls that need them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rar_tools.errors import ModelLoadError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
MAX_DETAIL_CHARS = 300  # of a library's own error text, quoted after ours
TRUE_VALUES = {"1", "on", "yes", "true"}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def is_local(reference: str | None) -> bool:
    """Whether `reference` (a model name, `local-dir:` folder, weights file or tag) needs no Hub:
    an existing path, a `local-dir:` folder, or no weights at all."""
    if reference is None or reference.lower() in ("", "none"):
        return True
    if reference.startswith("local-dir:"):
        return True
    return not reference.startswith("hf-hub:") and Path(reference).expanduser().exists()


def clip_needs_hub(model: str, pretrained: str | None) -> bool:
    """Whether open_clip fetches `model` with `pretrained` from the Hub: an `hf-hub:` model, or a
    built-in model name with a weights tag (the tags resolve to Hub repositories)."""
    if model.startswith("hf-hub:"):
        return True
    return not is_local(model) and not is_local(pretrained)


def offline_mode() -> bool:
    """Whether the Hub libraries are in offline mode already (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE`)."""
    return any(os.environ.get(name, "").strip().lower() in TRUE_VALUES for name in OFFLINE_VARIABLES)


def hub_endpoint() -> str:
    """The Hub's address as the libraries use it (`HF_ENDPOINT`, default https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def probe(endpoint: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `endpoint` answers an HTTP request (any status) within `timeout_s` seconds of wall
    time in all (a status line dripped a byte at a time included), else why it did not."""
    import httpx

    from rar_tools.deadline import run_async

    try:
        run_async(head_within, endpoint, timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


async def head_within(endpoint: str, timeout_s: float) -> None:
    """A HEAD request to `endpoint`, cancelled at the deadline (which closes the connection)."""
    import anyio
    import httpx

    with anyio.fail_after(timeout_s):
        async with httpx.AsyncClient(follow_redirects=False, timeout=None) as client:
            await client.head(endpoint)


def go_offline() -> None:
    """Offline mode for this process's Hub libraries, as if `HF_HUB_OFFLINE=1` had been set at start."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


class HubAccess:
    """Whether the Hub can be reached, found out once (thread-safe: parallel loaders share one probe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked = False
        self.unreachable: str | None = None  # why the Hub could not be reached, once found out
        self.endpoint: str | None = None

    def check(self) -> None:
        """Probe the Hub unless offline mode is on or it was probed before; switch to offline mode,
        with one log line, when it does not answer."""
        with self._lock:
            if self._checked or offline_mode():
                return
            self._checked = True
            self.endpoint = hub_endpoint()
            self.unreachable = probe(self.endpoint)
            if self.unreachable:
                go_offline()
                log.warning(
                    "the Hugging Face Hub at %s does not answer (%s): models load from the local cache only "
                    "(set HF_HUB_OFFLINE=1 to skip this check)",
                    self.endpoint,
                    self.unreachable,
                )

    def explain(self, error: ModelLoadError, what: str, flag: str) -> ModelLoadError:
        """`error` told as what it is when the Hub did not answer: `what` (the model) is not in the
        local cache, and how to get it there or go without it (`flag`: the setting to point at a folder)."""
        if not self.unreachable:
            return error
        detail = str(error)
        return ModelLoadError(
            f"could not load {what} from the local cache, and the Hugging Face Hub at {self.endpoint} does not "
            f"answer ({self.unreachable}). Download the weights once where the Hub is reachable (`hf download "
            f"REPO`), or give {flag} a local folder; HF_HUB_OFFLINE=1 skips the Hub check. The loader said: "
            f"{detail[:MAX_DETAIL_CHARS]}{'...' if len(detail) > MAX_DETAIL_CHARS else ''}"
        )

    @contextmanager
    def loading(self, needs_hub: bool, what: str, flag: str) -> Iterator[None]:
        """Around the load of `what`: the Hub checked first if it may come from there; a load error
        explained (see `explain`)."""
        if needs_hub:
            self.check()
        try:
            yield
        except ModelLoadError as exc:
            raise self.explain(exc, what, flag) from exc


def quiet_library_handlers() -> None:
    """Let `huggingface_hub`'s records reach the application's handlers only: the library adds its
    own stderr handler when imported, so each of its warnings (every download retry) printed twice."""
    from huggingface_hub.utils import logging as hub_logging

    library = hub_logging.get_logger()
    for handler in list(library.handlers):
        if type(handler) is logging.StreamHandler:
            library.removeHandler(handler)
