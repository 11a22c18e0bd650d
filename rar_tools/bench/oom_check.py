"""The self-check's out-of-memory case: a huge ranking request under a memory cap, through the MCP server.

The process's memory is capped at what it holds now plus a headroom (on CUDA with
`torch.cuda.set_per_process_memory_fraction`, on a Linux CPU with the address-space limit), so that
the outcome does not depend on how large the device is. Then, through an in-process MCP client:
a normal `rank_candidates` call, one with 50 long candidate names (a k x image budget far beyond the
headroom: the prompt's KV cache is repeated once per candidate), and the normal call again. The
check passes when the huge call comes back as a tool error that says the device ran out of memory
and the calls before and after it succeed under the same cap: the failed call's memory was released
and the server kept serving.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import torch

from rar_tools.bench.data import LABEL_NAMES
from rar_tools.limits import MAX_CANDIDATES, MAX_LABEL_CHARS

OOM_TEXT = "ran out of memory"
MAX_SHOWN_CHARS = 240


class CapUnavailable(Exception):
    """This platform offers no way to cap the process's memory."""


def huge_candidates(count: int = MAX_CANDIDATES, length: int = MAX_LABEL_CHARS - 10) -> list[str]:
    """`count` distinct candidate names of about `length` characters each."""
    names = []
    for index in range(count):
        words = [LABEL_NAMES[(index + step) % len(LABEL_NAMES)] for step in range(length // 8)]
        names.append(f"{index} {' '.join(words)}"[:length])
    return names


def address_space_bytes() -> int:
    """The process's virtual memory size (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise CapUnavailable("no VmSize in /proc/self/status")


@contextmanager
def memory_cap(device: str, headroom: int) -> Iterator[str]:
    """Cap this process's memory on `device` at what it holds now plus `headroom` bytes; yields how."""
    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(index).total_memory
        fraction = min(1.0, (torch.cuda.memory_reserved(index) + headroom) / total)
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        try:
            yield f"CUDA memory fraction {fraction:.4f} of {total / 2**30:.1f} GiB"
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
        return
    if not sys.platform.startswith("linux"):
        raise CapUnavailable(f"no memory cap for device {device!r} on {sys.platform}")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = address_space_bytes() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield f"address space limited to {limit / 2**30:.2f} GiB"
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def text_of(result: Any) -> str:
    """The text content of a tool result."""
    return " ".join(getattr(part, "text", "") for part in result.content)


async def oom_session(tools, image: str, device: str, headroom: int) -> dict[str, Any]:
    """Normal, huge and normal `rank_candidates` calls, the last two under the memory cap."""
    from mcp import Client

    from rar_tools.server import create_server

    normal = {"image": image, "candidates": list(LABEL_NAMES[:5])}
    huge = {"image": image, "candidates": huge_candidates()}
    async with Client(create_server(tools)) as client:
        before = await client.call_tool("rank_candidates", normal)
        with memory_cap(device, headroom) as how:
            refused = await client.call_tool("rank_candidates", huge)
            after = await client.call_tool("rank_candidates", normal)
    return {
        "cap": how,
        "headroom_bytes": headroom,
        "before_ok": not before.is_error,
        "huge_refused": bool(refused.is_error),
        "huge_message": text_of(refused),
        "after_ok": not after.is_error,
        "after_message": "" if not after.is_error else text_of(after),
    }


def run_oom_case(tools, image: str, device: str, headroom: int) -> tuple[bool, str, dict[str, Any]]:
    """(passed, detail, figures) of the out-of-memory case. Everything the server loads in the
    background is loaded first, so that nothing but the calls runs under the cap."""
    components = tools.components
    components.start_loading()
    for model in (components.clip, components.mllm, components.label_index):
        model.wait()
    figures = anyio.run(oom_session, tools, image, device, headroom)
    clear = figures["huge_refused"] and OOM_TEXT in figures["huge_message"]
    passed = figures["before_ok"] and clear and figures["after_ok"]
    detail = (
        f"{len(huge_candidates())} long candidates under a cap of current + {headroom / 2**20:.0f} MiB "
        f"({figures['cap']}): "
        + ("refused with " if clear else "NOT refused clearly: ")
        + repr(figures["huge_message"][:MAX_SHOWN_CHARS])
        + (
            "; the next call succeeded"
            if figures["after_ok"]
            else f"; the next call FAILED: {figures['after_message']}"
        )
    )
    return passed, detail, figures
