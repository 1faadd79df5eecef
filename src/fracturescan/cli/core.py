"""The Typer application object and the decorator that registers a guarded command."""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer

from ..errors import FracturescanError

app = typer.Typer(
    name="fracturescan",
    help="Detect fractures and other abnormalities in musculoskeletal radiographs (MURA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command(name: str | None = None,
            group: typer.Typer | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command (on ``group``, else the top level) whose FracturescanErrors become one
    line on stderr and exit code 1."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except FracturescanError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None

        return (group or app).command(name)(guarded)

    return register
