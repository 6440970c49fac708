"""Typer options built from dataclass fields: each field's name, type, default and help are written
once, on the field, and a command's signature is made from them.

    @with_fields(cfg=Fields(SearchConfig))
    def search(cfg: SearchConfig) -> None: ...      # one --option per SearchConfig field

    dataset: Annotated[str, option(DistillJob, "dataset")] = default(DistillJob, "dataset")   # one field

``tests/test_architecture.py`` checks every command's options against the fields they name.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Callable, Mapping, Optional

import typer

from ..fields import default_of, help_of


def option(cls: type, name: str, *flags: str, **kwargs: Any) -> Any:
    """``typer.Option`` with the help text of ``cls``'s field ``name`` (``help=`` may add to it)."""
    extra = kwargs.pop("help", "")
    text = help_of(cls, name) + (f"; {extra}" if extra else "")
    return typer.Option(*flags, help=text, **kwargs)


def default(obj: Any, name: str) -> Any:
    """The default of field ``name``: of a dataclass type, or of an instance (e.g. a default candidate)."""
    if isinstance(obj, type):
        return default_of(obj, name)
    return getattr(obj, name)


@dataclass(frozen=True)
class Fields:
    """The options a command takes from one dataclass: one per field but those in ``skip``.

    ``source`` is the dataclass, or an instance whose values are the defaults (the command's own,
    e.g. a job's candidate); ``more`` adds to a field's help what it also means on this command.
    A field that is no plain option (a repeatable flag parsed into a dict) is skipped and written
    as the command's own parameter."""

    source: Any
    skip: tuple[str, ...] = ()
    more: Mapping[str, str] = field(default_factory=dict)

    @property
    def cls(self) -> type:
        return self.source if isinstance(self.source, type) else type(self.source)

    def names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.cls) if f.name not in self.skip]

    def parameters(self) -> list[inspect.Parameter]:
        hints = typing.get_type_hints(self.cls)
        return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default(self.source, name),
                                  annotation=Annotated[_cli_type(hints[name]), self._option(name)])
                for name in self.names()]

    def build(self, values: dict[str, Any]) -> Any:
        if isinstance(self.source, type):
            return self.source(**values)
        return replace(self.source, **values)

    def _option(self, name: str) -> Any:
        return option(self.cls, name, help=self.more.get(name, ""))


def _cli_type(hint: Any) -> Any:
    """``int | None`` -> ``Optional[int]`` (what Typer reads as an option that may be left out)."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return Optional[next(a for a in args if a is not type(None))]
    return hint


def with_fields(**groups: Fields) -> Callable[[Callable], Callable]:
    """Give the command one option per field of each group; it is called with the built objects.

    The command's own parameters keep their place: its arguments first, then the fields' options,
    then its own options; it is called as ``fn(name=<dataclass built from the options>, ...)``."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values() if p.name not in groups]
        required = [p for p in own if p.default is inspect.Parameter.empty]   # arguments first
        made = [p for g in groups.values() for p in g.parameters()]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p not in required]
        clash = {p.name for p in own} & {p.name for p in made}
        assert not clash, f"{fn.__name__}: {sorted(clash)} are both its own parameters and fields"

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            built = {name: g.build({f: kwargs.pop(f) for f in g.names()}) for name, g in groups.items()}
            return fn(**kwargs, **built)

        params = required + made + rest
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]  # what Typer reads
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap
