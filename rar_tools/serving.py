"""`rar-tools serve` as a process: how it starts and how it stops.

The server stops when the client closes stdin (the stdio transport's end), on SIGINT (Ctrl-C in a
terminal) and on SIGTERM (what a host sends when it gives up waiting). Each time it releases the
data folder and the process exits within a second, with status 0 and no traceback, whatever is still
loading or running.

The exit is `os._exit` after our own clean-up, on purpose. Model loads and tool calls run in threads
that cannot be interrupted (importing torch, reading weights, a forward pass); an ordinary exit
finalises the interpreter around them, which took seconds and now and then ended in a C++ abort
("terminate called without an active exception"). What must be closed properly is closed first:
the memory store, after giving a write in progress `WRITE_GRACE_S` to finish (a store left mid-write
recovers when it next opens, as after a crash), then the data folder's lock, then the log handlers
and the standard streams are flushed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from rar_tools.api import RarTools

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WRITE_GRACE_S = 0.5  # how long a stop waits for a memory write in progress


def serve(tools: RarTools) -> NoReturn:
    """Run the MCP server of `tools` until the client leaves or a stop signal arrives, then exit."""
    from rar_tools.server import run_server

    tools.claim_data_dir()  # a second server on the same data dir stops here, with the holder's pid
    install_stop_handlers(tools)  # from here on the process ends only through `exit_now`
    run_server(tools)
    log.info("the client closed the connection; stopping")
    exit_now(tools, 0)


def install_stop_handlers(tools: RarTools) -> None:
    """SIGINT and SIGTERM stop the server at once (see the module's description)."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        exit_now(tools, 0)

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, stop)


def exit_now(tools: RarTools, code: int) -> NoReturn:
    """Close the store (a write in progress gets `WRITE_GRACE_S`), release the data folder, flush the
    logs and standard streams, and end the process with `code`, not waiting for other threads."""
    try:
        closed = tools.close(WRITE_GRACE_S)
        if not closed and not tools.components.store_opened:  # stopped straight after start
            log.info("stopped while the memory store was still opening; nothing had been written")
        elif not closed:
            log.warning("a memory write was still running at exit; the store tidies up when it next opens")
    except Exception as exc:  # the exit goes ahead: the OS releases the folder's lock in any case
        log.warning("closing the memory store at exit failed: %s", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to say there
            pass
    os._exit(code)
