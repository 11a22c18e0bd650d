"""The MCP registry entry (`server.json`, schema 2025-12-11): the PyPI package, run with `uvx` as
`rar-tools serve [FOLDER...]` over stdio, and the `RAR_TOOLS_*` variables an installer may set.
The registry checks PyPI ownership through the `mcp-name:` line in the README."""

from __future__ import annotations

from typing import Any

from rar_tools.release.launch import (
    FOLDERS_HELP,
    NAME,
    REGISTRY_NAME,
    SUMMARY,
    VERSION,
    OfferedSetting,
    offered_settings,
)

SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
FORMATS = {"boolean": "boolean", "number": "number", "directory": "filepath", "string": "string"}


def as_text(value: Any) -> str:
    """A default as the registry writes it: booleans as "true" / "false"."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def environment_variable(setting: OfferedSetting) -> dict[str, Any]:
    """One offered setting as a registry environment variable."""
    entry: dict[str, Any] = {
        "name": setting.variable,
        "description": setting.description,
        "isRequired": False,
        "format": FORMATS[setting.kind],
    }
    if setting.default != "":
        entry["default"] = as_text(setting.default)
    if setting.choices:
        entry["choices"] = setting.choices
    return entry


def package_arguments() -> list[dict[str, Any]]:
    """`serve`, then the picture folders (repeatable)."""
    return [
        {"type": "positional", "value": "serve"},
        {
            "type": "positional",
            "valueHint": "picture_folder",
            "description": FOLDERS_HELP,
            "format": "filepath",
            "isRequired": False,
            "isRepeated": True,
        },
    ]


def registry_entry() -> dict[str, Any]:
    """The whole `server.json`."""
    return {
        "$schema": SCHEMA,
        "name": REGISTRY_NAME,
        "title": NAME,
        "description": SUMMARY,
        "version": VERSION,
        "packages": [
            {
                "registryType": "pypi",
                "registryBaseUrl": "https://pypi.org",
                "identifier": NAME,
                "version": VERSION,
                "runtimeHint": "uvx",
                "transport": {"type": "stdio"},
                "packageArguments": package_arguments(),
                "environmentVariables": [environment_variable(s) for s in offered_settings()],
            }
        ],
    }
