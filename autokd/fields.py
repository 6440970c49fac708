"""Dataclass fields that carry their help text: the one source of a setting's default and of the
CLI line that explains it (``autokd.cli.options`` reads both, so a command never restates one)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


DEVICES = ("auto", "cpu", "cuda")  # the choices of every ``device`` setting; auto = cuda if available


def knob(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """``field(default=..., metadata={"help": help})``; ``factory`` for a mutable default."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(cls: type[DataclassInstance], name: str) -> str:
    return cls.__dataclass_fields__[name].metadata.get("help", "")


def default_of(cls: type[DataclassInstance], name: str) -> Any:
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
