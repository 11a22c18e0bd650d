"""Command-line flags generated from the typed models: one flag per `Settings` field, and one flag
(or positional argument) per request-model field of an operation, with its type, choices, default
and description taken from the model. Nothing here imports a model library."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic.fields import FieldInfo

from rar_tools.arguments import Cli, ImageSource
from rar_tools.requests import Request
from rar_tools.settings import Settings


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field; unset flags leave the environment and defaults in charge.
    Booleans are switches, Literals have choices, lists are repeatable flags."""
    group = parser.add_argument_group("settings (also RAR_TOOLS_* environment variables)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env RAR_TOOLS_{name.upper()}]"
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        if typing.get_origin(annotation) is list:
            group.add_argument(flag, action="append", default=argparse.SUPPRESS, help=help_text, metavar=name.upper())
            continue
        choices = literal_choices(annotation)
        group.add_argument(
            flag, default=argparse.SUPPRESS, choices=choices, help=help_text, metavar=None if choices else name.upper()
        )


def settings_from(args: argparse.Namespace) -> Settings:
    given = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    return Settings(**given)


def literal_choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return None


def plain_type(annotation: Any) -> Any:
    """The annotation without `Annotated` and without `None` in a union."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return plain_type(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return plain_type(members[0]) if len(members) == 1 else annotation
    return annotation


def marker(info: FieldInfo, kind: type) -> Any:
    """The field's metadata object of `kind`, looking inside list items too, or None."""
    found = [m for m in info.metadata if isinstance(m, kind)]
    item = typing.get_args(plain_type(info.annotation))
    if not found and item and typing.get_origin(item[0]) is Annotated:
        found = [m for m in typing.get_args(item[0])[1:] if isinstance(m, kind)]
    return found[0] if found else None


def is_box(annotation: Any) -> bool:
    """A list of four floats (box coordinates)."""
    return plain_type(annotation) == list[float]


def flag_of(name: str, info: FieldInfo) -> str:
    """The flag that sets field `name` (or the positional argument's name)."""
    cli = marker(info, Cli) or Cli()
    return cli.flag or "--" + name.replace("_", "-")


def is_positional(info: FieldInfo) -> bool:
    cli = marker(info, Cli) or Cli()
    return cli.positional or (info.is_required() and cli.flag is None)


def argument_options(name: str, info: FieldInfo) -> dict[str, Any]:
    """`add_argument` keywords for one request field: type, choices, nargs, default and help."""
    cli = marker(info, Cli) or Cli()
    kind = plain_type(info.annotation)
    options: dict[str, Any] = {"help": info.description, "dest": name}
    if not info.is_required():
        options["default"] = info.default
    elif not is_positional(info):
        options["required"] = True
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
    if kind is bool:
        return {**options, "action": "store_true"}
    if is_box(kind):
        return {**options, "nargs": 4, "type": float, "metavar": ("X1", "Y1", "X2", "Y2")}
    if item is not None and is_box(item):
        return {**options, "nargs": 4, "type": float, "action": "append", "metavar": ("X1", "Y1", "X2", "Y2")}
    if item is not None:
        if cli.repeat:
            return {**options, "action": "append"}
        many = "*" if is_positional(info) and not info.is_required() else "+"
        return {**options, "nargs": many, "metavar": name.upper().rstrip("S") or name.upper()}
    choices = literal_choices(kind)
    if choices:
        return {**options, "choices": choices}
    return {**options, "type": kind if kind in (int, float) else str}


def add_request_flags(parser: argparse.ArgumentParser, request_type: type[Request], fields: list[str]) -> None:
    """One flag or positional argument per field of `request_type` in `fields`."""
    for name in fields:
        info = request_type.model_fields[name]
        options = argument_options(name, info)
        if is_positional(info):
            options.pop("dest")
            options.pop("required", None)
            parser.add_argument(name, **options)
        else:
            parser.add_argument(flag_of(name, info), **options)


def request_arguments(args: argparse.Namespace, request_type: type[Request], fields: list[str]) -> dict[str, Any]:
    """The command's values of `fields`, as keyword arguments of the API call; image paths made absolute,
    an empty optional list left unset."""
    values = {}
    for name in fields:
        info = request_type.model_fields[name]
        value = getattr(args, name)
        if value == [] and not info.is_required():
            value = None
        if marker(info, ImageSource) is not None and value is not None:
            value = [image_argument(v) for v in value] if isinstance(value, list) else image_argument(value)
        values[name] = value
    return values


def image_argument(value: str) -> str:
    """A CLI image path becomes absolute; base64, data: and http(s) URLs pass through."""
    if value.startswith(("data:", "http://", "https://")) or (len(value) > 256 and "/" not in value[:64]):
        return value
    return str(Path(value).expanduser().absolute())
