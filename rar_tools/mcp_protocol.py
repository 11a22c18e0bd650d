"""How the server refuses what a client sent wrong, in words a person (or a model) can act on.

- A tool argument of the wrong type or missing: the MCP SDK checks arguments against the input
  schema before our tool runs, and its error quoted pydantic's internals (the model
  `retrieve_candidatesArguments`, pydantic.dev links). The same arguments are checked by the
  operation's request model instead, whose messages are sentences naming the argument.
- A prompt asked for with a missing or unknown argument, or an unknown prompt: a JSON-RPC
  invalid-params error that says which (the SDK answered code 0 and logged a traceback), logged as
  one line.
- A tool argument the tool does not take (a typo such as `top_k` for `k`): the SDK dropped it
  silently and the call ran with the default; it is refused, naming the arguments the tool takes.
- A request before `initialize`: the SDK's answer was a bare "Invalid request parameters"; it now
  says that the client must initialize first.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS
from pydantic import ValidationError

from rar_tools.arguments import validation_message
from rar_tools.errors import RarToolsError
from rar_tools.requests import OPERATIONS

log = logging.getLogger(__name__)

SDK_INVALID_PARAMS = "Invalid request parameters"  # the SDK's message for every invalid-params case
NOT_INITIALIZED = (
    "the server has not been initialized: send `initialize` first (then `notifications/initialized`), "
    "as the MCP lifecycle requires"
)


def argument_problem(tool: str, arguments: dict[str, Any], error: ValidationError) -> str:
    """What is wrong with a tool's `arguments`, in the words of its request model's checks."""
    request = OPERATIONS.get(tool)
    if request is not None:
        try:
            request.validated(arguments)
        except RarToolsError as exc:
            return str(exc)
    return validation_message(error)


def unknown_arguments(tool: str, arguments: dict[str, Any]) -> str | None:
    """Which of `arguments` tool `tool` does not take (None when it takes them all, or is not ours)."""
    request = OPERATIONS.get(tool)
    if request is None:
        return None
    known = request.fields_on("mcp")
    unknown = [name for name in arguments if name not in known]
    if not unknown:
        return None
    return f"{tool} takes no argument {' or '.join(map(repr, unknown[:5]))}; its arguments are {', '.join(known)}"


def prompt_problem(prompt: Any | None, name: str, arguments: dict[str, Any], known: list[str]) -> str | None:
    """Why prompt `name` cannot be rendered with `arguments` (None when it can): an unknown prompt,
    a missing required argument or an argument it does not take."""
    if prompt is None:
        return f"unknown prompt {name!r}; prompts: {', '.join(known) or 'none'}"
    declared = {arg.name: arg for arg in prompt.arguments or []}
    missing = [n for n, arg in declared.items() if arg.required and arguments.get(n) in (None, "")]
    if missing:
        return f"prompt {name!r} needs the argument {' and '.join(map(repr, missing))}"
    unknown = sorted(set(arguments) - set(declared))
    if unknown:
        return f"prompt {name!r} takes no argument {' or '.join(map(repr, unknown))}; it takes {', '.join(declared)}"
    return None


class RarServer(MCPServer):
    """The MCP SDK's server, with the refusals above told in our words."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.middleware.append(initialize_first)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        problem = unknown_arguments(name, arguments or {})
        if problem:
            raise ToolError(f"Error executing tool {name}: {problem}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            problem = argument_problem(name, arguments, exc.__cause__)
            raise ToolError(f"Error executing tool {name}: {problem}") from None

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context: Any = None) -> Any:
        prompts = {prompt.name: prompt for prompt in await self.list_prompts()}
        problem = prompt_problem(prompts.get(name), name, arguments or {}, sorted(prompts))
        if problem:
            log.info("prompt request refused: %s", problem)
            raise MCPError(code=INVALID_PARAMS, message=problem)
        return await super().get_prompt(name, arguments, context)


async def initialize_first(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: a request refused because `initialize` has not been received says so."""
    try:
        return await call_next(ctx)
    except MCPError as exc:
        refused = exc.error.code == INVALID_PARAMS and exc.error.message == SDK_INVALID_PARAMS
        if refused and ctx.session.client_params is None and ctx.method != "initialize":
            raise MCPError(code=INVALID_PARAMS, message=NOT_INITIALIZED, data=ctx.method) from None
        raise
