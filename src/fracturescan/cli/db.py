"""``fracturescan db``: the database's schema revision, its upgrade, backups and restores."""

from __future__ import annotations

from pathlib import Path

import typer

from .core import app, command
from .db_url import resolve_db_url, shown
from .server import _DB

db_app = typer.Typer(help="Schema upgrades, backups and restores of the app database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@command("upgrade", group=db_app)
def upgrade(db: str = _DB) -> None:
    """Migrate the database to this version's schema (back it up first); every row is kept."""
    from ..store.db import connect
    from ..store.schema import upgrade as run_upgrade

    engine = connect(resolve_db_url(db))
    try:
        done = run_upgrade(engine)
    finally:
        engine.dispose()
    if done.before == done.after:
        typer.echo(f"The database is already at revision {done.after}.")
        return
    note = " (recognised a database from before schema versioning)" if done.stamped_unversioned else ""
    typer.echo(f"Upgraded the database from revision {done.before or 'empty'} to {done.after}{note}.")


@command("current", group=db_app)
def current(db: str = _DB) -> None:
    """Print the database's schema revision and the one this version needs."""
    from ..store.db import connect
    from ..store.schema import current_revision, head_revision

    engine = connect(resolve_db_url(db))
    try:
        with engine.connect() as connection:
            revision = current_revision(connection)
    finally:
        engine.dispose()
    typer.echo(f"database: {revision or 'unversioned or empty'}; this fracturescan: {head_revision()}")


@command("backup", group=db_app)
def backup(file: Path = typer.Argument(..., help="New file to write (never overwritten)."), db: str = _DB) -> None:
    """Copy the database while the services keep running (SQLite online backup; pg_dump)."""
    from ..store.backup import backup as run_backup

    result = run_backup(resolve_db_url(db), file)
    counts = ", ".join(f"{table} {n}" for table, n in result.rows.items())
    typer.echo(f"Backed up to {result.path} ({result.size_bytes / 1e6:.1f} MB){'; rows: ' + counts if counts else ''}.")


@command("restore", group=db_app)
def restore(file: Path = typer.Argument(..., help="A file written by `fracturescan db backup`."),
            db: str = _DB) -> None:
    """Restore a backup into a NEW database (a missing SQLite file or an empty PostgreSQL database)."""
    from ..store.backup import restore as run_restore

    db = resolve_db_url(db)
    result = run_restore(file, db)
    counts = ", ".join(f"{table} {n}" for table, n in result.rows.items())
    typer.echo(f"Restored {file} into {shown(db)}{'; rows: ' + counts if counts else ''}. "
               "Run `fracturescan db upgrade` if it came from an older version.")
