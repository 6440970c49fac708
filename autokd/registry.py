"""One small registry for autokd's plug-ins (models, datasets, losses, criteria).

Strings become objects once, at the edge (CLI, YAML): ``REG.get(name)``. Duplicate keys raise;
an unknown key raises :class:`UnknownName`, whose message lists the valid names.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar, cast

from .errors import UserError

T = TypeVar("T")


class UnknownName(UserError, KeyError):
    """A name that is not registered: a user error (``str(err)`` is one line a user can act on),
    and a ``KeyError`` for code that looks names up."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain line
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or cast(Callable[..., object], obj).__name__  # unnamed: a function or class
            self.add(key, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
