"""``fracturescan doctor``: the deployment self-check, as a table; exit code 1 if any check fails."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import output
from .core import command
from .db_url import resolve_db_url
from .server import _DB, _MODEL, _MODELS


@command()
def doctor(
    models: Optional[Path] = _MODELS,
    model: Optional[list[Path]] = _MODEL,
    db: str = _DB,
    url: Optional[str] = typer.Option(None, "--url", help="The address users open, e.g. https://fracturescan.example.org/"),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA bundle that signs the proxy's certificate "
                                                                   "(default: the system's)."),
    app_bind: str = typer.Option("127.0.0.1:8501", "--app", help="HOST:PORT the web app was started on."),
    api_bind: str = typer.Option("127.0.0.1:8000", "--api", help="HOST:PORT the API was started on."),
    min_free_gb: float = typer.Option(2.0, "--min-free-gb", help="Warn below this much free disk space."),
) -> None:
    """Check a deployment: bind addresses, TLS in front, database, audit triggers, models, disk."""
    from ..doctor import FAIL, run_checks

    checks = run_checks(resolve_db_url(db), models, tuple(model or ()), {"app": app_bind, "api": api_bind}, url, ca_file,
                        min_free_gb)
    typer.echo(output.table(("check", "status", "detail"), [(c.name, c.status.upper() if c.status == FAIL
                                                             else c.status, c.detail) for c in checks]))
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        typer.echo(f"{len(failed)} check(s) failed.", err=True)
        raise typer.Exit(1)
