"""What every ``autokd`` command shares: the consoles, one-line errors, the epoch printer.

Its own module so that the command modules (``cli.app``, ``cli.distill``, ``cli.pareto``) import
it and not each other.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import UserError

out = Console()
err = Console(stderr=True)


def wide() -> Console:
    """``out`` on a terminal; piped, a 160-column console, so a table is not cut to 80 columns."""
    return out if out.is_terminal else Console(width=160)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# the base of Click's command-line errors, wherever this Typer keeps its Click (vendored since 0.25)
CommandLineError: type[Any] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """The app's group: a mistyped command line (an unknown option, ``--compute abc``) is one line
    on stderr and exit 2, like every other user mistake, instead of Click's usage box."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except CommandLineError as e:
            if not standalone_mode:
                raise
            where = e.ctx.command_path if getattr(e, "ctx", None) else "autokd"
            if not e.format_message().strip():  # a group called with nothing: its help is already shown
                sys.exit(e.exit_code)
            err.print(f"[bold red]error:[/] {escape(e.format_message())} (see `{escape(where)} --help`)",
                      highlight=False, soft_wrap=True)
            code = e.exit_code
        except typer.Abort:
            if not standalone_mode:
                raise
            err.print("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def user_errors(fn: Callable) -> Callable:
    """Turn a user's mistake into one line and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
        assert min(c, h, w) > 0
    except (ValueError, AssertionError):
        raise UserError(f"--input {text!r}: expected CxHxW, e.g. 3x32x32") from None
    return c, h, w


def epoch_printer(label: str) -> Callable[[int, int, dict], None]:
    """A per-epoch callback: a rich progress bar on a terminal, one line per epoch otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=out, transient=False)
    task = None

    def show(epoch: int, total: int, record: dict) -> None:
        nonlocal task
        info = f"loss {record['loss']:.4f}  val acc {100 * record['val_accuracy']:.2f}%"
        if not out.is_terminal:
            out.print(f"{label} epoch {epoch}/{total}  {info}", highlight=False)
            return
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total, info="")
        bar.update(task, completed=epoch, total=total, info=info)
        if epoch >= total:
            bar.stop()

    return show


def check_positive(**values: float) -> None:
    for name, v in values.items():
        if v is None or v <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {v}")
