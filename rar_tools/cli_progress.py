"""Progress bars on stderr for the commands whose operations report progress (`import`, `reembed`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

WITH_PROGRESS_BAR = ("import", "reembed")


def with_progress_bar(call: Callable[..., BaseModel], request: Any, quiet: bool) -> BaseModel:
    """`call(request)` with a progress bar on stderr fed by its progress callback."""
    from tqdm import tqdm

    with tqdm(unit="entry", file=sys.stderr, disable=quiet) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return call(request, progress=advance)
