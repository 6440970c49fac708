"""Typer options whose default and help come from a dataclass field: one source for both.

    trials: Annotated[int, option(SearchConfig, "trials")] = default(SearchConfig, "trials")

``tests/test_cli_options.py`` checks every command's options against the fields they name.
"""
from __future__ import annotations

from typing import Any

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
