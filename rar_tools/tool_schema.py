"""Deriving an MCP tool's arguments from a request model: the field types with their bounds and
descriptions, without the checks (those run when the tool builds its request, so a refusal reaches
the caller as a `ToolError` with our own message, not as a hidden validator crash).

JSON arguments are taken as typed: a number is never a boolean or a string (`k: true` is not k = 1,
`"5"` is not 5) and a boolean is only `true` or `false` (`"yes"` and 1 are refused); an integer
argument still takes 5.0 and a float one takes 5."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field
from pydantic.fields import FieldInfo

from rar_tools.arguments import Cli, ImageSource, Surfaces
from rar_tools.errors import describe
from rar_tools.requests import Request

NOT_SCHEMA = (BeforeValidator, Surfaces, Cli, ImageSource)


def json_scalar(annotation: Any) -> type | None:
    """The number or boolean type a field's values are made of (through `Annotated`, `Optional` and
    lists), or None for other fields."""
    if annotation in (bool, int, float):
        return annotation
    if typing.get_origin(annotation) is Literal:
        return None
    members = {json_scalar(a) for a in typing.get_args(annotation) if a is not type(None)} - {None}
    return members.pop() if len(members) == 1 else None


def leaves(value: Any) -> Iterator[Any]:
    """The scalars of a value, through nested lists."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def typed_as_json(scalar: type) -> Callable[[Any], Any]:
    """A check that `scalar` values arrived as JSON types them: a number is never a boolean or a
    string, a boolean is only true or false (pydantic alone would read `true` as 1 and `"yes"` as true)."""

    def check(value: Any) -> Any:
        for leaf in leaves(value):
            if scalar is bool and not isinstance(leaf, bool) and leaf is not None:
                raise ValueError(f"expected true or false, got {describe(leaf)}")
            if scalar is not bool and isinstance(leaf, bool):
                raise ValueError(f"expected a number, got the boolean {str(leaf).lower()}")
            if scalar is not bool and isinstance(leaf, str):
                raise ValueError(f"expected a number, got the string {describe(leaf)}")
        return value

    return check


def schema_only(annotation: Any) -> Any:
    """`annotation` with the checks and surface markers removed from every `Annotated` in it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        base, *metadata = args
        kept = [m for m in metadata if not isinstance(m, NOT_SCHEMA)]
        base = schema_only(base)
        return Annotated[(base, *kept)] if kept else base
    if not args or origin is Literal:
        return annotation
    inner = tuple(schema_only(a) for a in args)
    if origin in (Union, types.UnionType):
        return Union[inner]  # noqa: UP007 (a runtime tuple of members)
    return origin[inner if origin is tuple else inner[0] if len(inner) == 1 else inner]


def field_annotation(info: FieldInfo) -> Any:
    """A field as a function parameter's annotation: its type, bounds, description and extra schema."""
    kept = [m for m in info.metadata if not isinstance(m, NOT_SCHEMA)]
    described = Field(description=info.description, json_schema_extra=info.json_schema_extra)
    scalar = json_scalar(info.annotation)
    typed = [BeforeValidator(typed_as_json(scalar))] if scalar else []
    return Annotated[(schema_only(info.annotation), *kept, described, *typed)]


def tool_parameters(request_type: type[Request]) -> list[inspect.Parameter]:
    """Keyword-only parameters for the request's MCP fields: required ones first, then the rest."""
    fields = request_type.model_fields
    names = request_type.fields_on("mcp")
    ordered = [n for n in names if fields[n].is_required()] + [n for n in names if not fields[n].is_required()]
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=field_annotation(fields[name]),
            default=inspect.Parameter.empty if fields[name].is_required() else fields[name].default,
        )
        for name in ordered
    ]
