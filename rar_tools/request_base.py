"""The base of the request models (`requests.py`): strict, frozen, built from a Python call, with
type errors told as one sentence per argument. Light to import."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import wraps
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from rar_tools.arguments import Surface, field_surfaces, validation_message
from rar_tools.errors import RarToolsError

ModelName = Literal["encoder", "ranker", "detector"]
ProgressFn = Callable[[int, int], None]
F = TypeVar("F", bound=Callable[..., Any])


class Request(BaseModel):
    """Base of the request models: strict about unknown arguments, built from a Python call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    positional: ClassVar[tuple[str, ...]] = ()  # the Python API's positional argument order
    error: ClassVar[type[RarToolsError]] = RarToolsError  # raised for type errors pydantic finds
    models: ClassVar[frozenset[ModelName]] = frozenset()  # the models the operation waits for

    def needs(self) -> frozenset[ModelName]:
        """The models this request must wait for (a server waits for them with progress)."""
        return self.models

    @classmethod
    def from_call(cls, *args: Any, order: tuple[str, ...] | None = None, **kwargs: Any) -> Any:
        """The request for a Python call: a request object as the one argument, or the method's
        positional (in `order`, default `positional`) and keyword arguments. Type errors become the
        operation's `RarToolsError`."""
        if len(args) == 1 and isinstance(args[0], cls) and not kwargs:
            return args[0]
        order = cls.positional if order is None else order
        if len(args) > len(order):
            raise TypeError(f"{cls.__name__} takes at most {len(order)} positional arguments")
        given = dict(zip(order, args))
        doubled = given.keys() & kwargs.keys()
        if doubled:
            raise TypeError(f"{cls.__name__}: {sorted(doubled)} given by position and by name")
        return cls.validated({**given, **kwargs})

    @classmethod
    def validated(cls, values: dict[str, Any]) -> Any:
        """`model_validate`, with pydantic's errors told as one sentence per argument."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise cls.error(validation_message(exc)) from None

    @classmethod
    def fields_on(cls, surface: Surface) -> list[str]:
        """The names of the fields offered on `surface`: the operation's own first, then its groups'."""
        ordered = [name for klass in cls.__mro__ for name in vars(klass).get("__annotations__", {})]
        fields = cls.model_fields
        names = [name for name in dict.fromkeys(ordered) if name in fields]
        return [name for name in names if surface in field_surfaces(fields[name].metadata)]


def takes(request_type: type[Request], order: tuple[str, ...] | None = None, progress: bool = False):
    """Make a method take `request_type` (or its fields by position in `order` and by keyword), and
    show the fields as the method's signature."""

    def decorate(method: F) -> F:
        @wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            extra = {"progress": kwargs.pop("progress", None)} if progress else {}
            return method(self, request_type.from_call(*args, order=order, **kwargs), **extra)

        names = order or request_type.positional
        fields = request_type.model_fields
        parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
        for name in [*names, *(n for n in request_type.fields_on("api") if n not in names)]:
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if name in names else inspect.Parameter.KEYWORD_ONLY
            default = inspect.Parameter.empty if fields[name].is_required() else fields[name].default
            parameters.append(inspect.Parameter(name, kind, default=default, annotation=fields[name].annotation))
        if progress:
            parameters.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=None))
        call.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate
