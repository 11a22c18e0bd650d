"""The MCP Bundle manifest (`.mcpb`, manifest version 0.4) for Claude Desktop and other MCPB hosts.

The bundle carries the package source and `pyproject.toml`; its server type is `uv`, so the host
installs Python and the dependencies with uv on first start and runs `python -m rar_tools serve`
in the bundle's folder. The user's answers reach the server as `RAR_TOOLS_*` variables (an empty
answer leaves the setting at its default) and the picture folders as `serve FOLDER...` arguments.
"""

from __future__ import annotations

import inspect
from typing import Any

import anyio
from mcp.server import MCPServer

from rar_tools.mcp_extras import register_prompts
from rar_tools.release.launch import FOLDERS_HELP, FOLDERS_TITLE, NAME, SUMMARY, VERSION, offered_settings
from rar_tools.requests import OPERATIONS

MANIFEST_VERSION = "0.4"
FOLDERS_KEY = "picture_folders"
LONG_DESCRIPTION = """rar-tools recognises fine-grained categories (bird species, aircraft models, \
pet breeds, your own things) with RAR: a CLIP memory of labelled examples retrieves the few most \
similar labels, and a local multimodal LLM ranks them. Teach it by adding the pictures you confirm.

On first start the host installs Python and the dependencies (PyTorch among them) with uv, and the \
first tool call downloads the models (CLIP ViT-B/16, Qwen2.5-VL-3B) from Hugging Face unless the \
model settings name local folders. Memories live in the data folder (default: \
~/.local/share/rar-tools/memories)."""


def first_paragraph(text: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def tool_entries() -> list[dict[str, str]]:
    """Every MCP tool, named as the server names it, described by its request model."""
    return [
        {"name": name, "description": first_paragraph(request.__doc__ or "")} for name, request in OPERATIONS.items()
    ]


async def registered_prompts() -> list[dict[str, Any]]:
    """The server's prompts as registered, each rendered with `${arguments.NAME}` placeholders."""
    server = MCPServer(NAME)
    register_prompts(server)
    entries = []
    for prompt in await server.list_prompts():
        names = [argument.name for argument in prompt.arguments or []]
        rendered = await server.get_prompt(prompt.name, {name: f"${{arguments.{name}}}" for name in names})
        text = "\n".join(message.content.text for message in rendered.messages)
        entries.append({"name": prompt.name, "description": prompt.description, "arguments": names, "text": text})
    return entries


def user_config() -> dict[str, dict[str, Any]]:
    """The install form: the picture folders (required), then each offered setting with its default."""
    form: dict[str, dict[str, Any]] = {
        FOLDERS_KEY: {
            "type": "directory",
            "title": FOLDERS_TITLE,
            "description": FOLDERS_HELP,
            "multiple": True,
            "required": True,
        }
    }
    for setting in offered_settings():
        form[setting.field] = {
            "type": setting.kind,
            "title": setting.title,
            "description": setting.description,
            "required": False,
            "default": setting.default,
        }
    return form


def mcp_config() -> dict[str, Any]:
    """How the host starts the server: uv runs the bundled package; settings travel as variables."""
    return {
        "command": "uv",
        "args": [
            "run",
            "--directory",
            "${__dirname}",
            "python",
            "-m",
            "rar_tools",
            "serve",
            f"${{user_config.{FOLDERS_KEY}}}",
        ],
        "env": {setting.variable: f"${{user_config.{setting.field}}}" for setting in offered_settings()},
    }


def bundle_manifest() -> dict[str, Any]:
    """The whole `manifest.json`."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": NAME,
        "display_name": "rar-tools: fine-grained visual recognition",
        "version": VERSION,
        "description": SUMMARY,
        "long_description": LONG_DESCRIPTION,
        "author": {"name": "rar-tools contributors"},
        "license": "MIT",
        "keywords": ["vision", "recognition", "clip", "retrieval", "fine-grained", "rar"],
        "server": {"type": "uv", "entry_point": "rar_tools/__main__.py", "mcp_config": mcp_config()},
        "tools": tool_entries(),
        "tools_generated": False,
        "prompts": anyio.run(registered_prompts),
        "prompts_generated": False,
        "compatibility": {"platforms": ["darwin", "win32", "linux"], "runtimes": {"python": ">=3.10"}},
        "user_config": user_config(),
    }
