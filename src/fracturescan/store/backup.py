"""Backups of the app database that are safe while the app and the API keep writing, and their
restore: SQLite through its online backup API (a consistent snapshot, readers and writers carry
on), PostgreSQL through ``pg_dump``/``pg_restore`` (one transaction snapshot).

A backup holds only committed transactions, so every audit row committed before it started is
in it and no analysis is in it by halves. Passwords never appear on a command line: pg_dump gets
them through the PGPASSWORD environment variable of its own process.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from fracturescan.errors import FracturescanError

from .db import APPEND_ONLY_TABLES


class BackupError(FracturescanError):
    """A backup or restore could not be made; nothing was changed."""


@dataclass(frozen=True)
class BackupResult:
    """Where the backup went and, for SQLite, how many rows each audit table holds in it."""

    path: Path
    size_bytes: int
    rows: dict[str, int]


def _sqlite_file(url: URL) -> Path | None:
    if not url.get_backend_name() == "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:":
        raise BackupError("An in-memory SQLite database cannot be backed up; use a file URL.")
    return Path(database.removeprefix("file:"))


def _audit_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in APPEND_ONLY_TABLES}


def _pg_environment(url: URL) -> tuple[list[str], dict[str, str]]:
    """libpq connection options for pg_dump/pg_restore, and the environment carrying the password."""
    args = []
    host = url.host or url.query.get("host")
    if isinstance(host, tuple):
        host = host[0]
    for flag, value in (("--host", host), ("--port", url.port or url.query.get("port")),
                        ("--username", url.username)):
        if value:
            args += [flag, str(value if not isinstance(value, tuple) else value[0])]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise BackupError(f"{command[0]} is not installed; install PostgreSQL's client programs "
                          "(apt-get install postgresql-client) matching the server's version.") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"{what} failed: {detail}")


def _pg_tool(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))  # Debian: newest version first
    return str(found[-1]) if found else (shutil.which(name) or name)


def backup(db_url: str, target: Path) -> BackupResult:
    """Write a consistent copy of the database to ``target`` (refuses to overwrite a file)."""
    url = make_url(db_url)
    target = Path(target)
    if target.exists():
        raise BackupError(f"{target} exists; choose a new file name (backups are never overwritten).")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source = _sqlite_file(url)
    if source is not None:
        if not source.is_file():
            raise BackupError(f"No database file at {source}.")
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(partial) as dst:
            src.backup(dst)  # one step: a snapshot of committed pages, writers are not blocked (WAL)
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            rows = _audit_counts(dst)
            if dst.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"The copy in {partial} failed SQLite's integrity check; the source may be damaged.")
    elif url.get_backend_name() == "postgresql":
        args, env = _pg_environment(url)
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file", str(partial),
              *args, url.database or "postgres"], env, "pg_dump")
        _run([_pg_tool("pg_restore"), "--list", str(partial)], env, "reading the dump back")
        rows = {}
    else:
        raise BackupError(f"Backups support SQLite and PostgreSQL, not {url.get_backend_name()}.")
    os.replace(partial, target)
    return BackupResult(target, target.stat().st_size, rows)


def restore(backup_file: Path, db_url: str) -> BackupResult:
    """Restore ``backup_file`` into the database at ``db_url``, which must not hold fracturescan
    tables yet (an SQLite file that does not exist, or an empty PostgreSQL database)."""
    backup_file = Path(backup_file)
    if not backup_file.is_file():
        raise BackupError(f"No backup file at {backup_file}.")
    url = make_url(db_url)
    target = _sqlite_file(url)
    if target is not None:
        if target.exists():
            raise BackupError(f"{target} exists; restore into a new file, then swap it in while the services "
                              "are stopped (a restore never overwrites a database).")
        with sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True) as src:
            if src.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"{backup_file} is not an intact SQLite database.")
            with sqlite3.connect(target) as dst:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=WAL")
                rows = _audit_counts(dst)
        return BackupResult(target, target.stat().st_size, rows)
    if url.get_backend_name() != "postgresql":
        raise BackupError(f"Restores support SQLite and PostgreSQL, not {url.get_backend_name()}.")
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        if inspect(engine).get_table_names():
            raise BackupError(f"The database {url.database} is not empty; restore into a new, empty database "
                              "(createdb) and point the services at it.")
    finally:
        engine.dispose()
    args, env = _pg_environment(url)
    _run([_pg_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges",
          *args, "--dbname", url.database or "postgres", str(backup_file)], env, "pg_restore")
    return BackupResult(backup_file, backup_file.stat().st_size, {})

