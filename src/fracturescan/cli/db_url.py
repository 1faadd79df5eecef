"""Where the server commands get their database URL: ``--db``, the environment, or a file.

A password on the command line is visible to every local user (``ps``, ``/proc/*/cmdline``)
and lands in shell history, so a URL carrying one is refused there; it belongs in
``FRACTURESCAN_DB_URL`` or in a file named by ``FRACTURESCAN_DB_URL_FILE`` (e.g. a systemd
credential or a Docker secret, readable by the service account only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..appconfig import DEFAULT_DB_URL, ENV_DB_URL
from ..errors import FracturescanError

if TYPE_CHECKING:  # sqlalchemy is an optional extra
    from sqlalchemy import Engine

ENV_DB_URL_FILE = "FRACTURESCAN_DB_URL_FILE"

#: The ``--db`` option every database command shares.
DB_OPTION = typer.Option(
    DEFAULT_DB_URL, "--db", envvar=ENV_DB_URL, show_envvar=True,
    help="SQLAlchemy database URL (SQLite file or PostgreSQL); the app and the API share it. "
         f"A URL with a password goes in ${ENV_DB_URL} or a file named by ${ENV_DB_URL_FILE}, "
         "never on the command line.")


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return bool(make_url(url).password)
    except ArgumentError:
        return False  # not a URL at all: the engine says so when it opens it


def resolve_db_url(db: str) -> str:
    """The database URL to use, given the ``--db`` value a command received.

    ``--db`` on the command line wins (without a password); then ``FRACTURESCAN_DB_URL``
    (Typer reads it into ``db``); then the first line of ``FRACTURESCAN_DB_URL_FILE``; then
    the default SQLite file.
    """
    from_environment = db == os.environ.get(ENV_DB_URL)
    if db != DEFAULT_DB_URL and not from_environment:  # typed on the command line
        if _has_password(db):
            raise FracturescanError(
                f"--db carries a password, which every local user can read from the process list; "
                f"put the URL in ${ENV_DB_URL} or in a file named by ${ENV_DB_URL_FILE} instead.")
        return db
    file = os.environ.get(ENV_DB_URL_FILE)
    if file and not os.environ.get(ENV_DB_URL):
        try:
            lines = Path(file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise FracturescanError(f"${ENV_DB_URL_FILE} names {file}, which cannot be read: "
                                    f"{exc.strerror or exc}.") from None
        if not lines or not lines[0].strip():
            raise FracturescanError(f"{file} (from ${ENV_DB_URL_FILE}) is empty; write the database URL "
                                    "on its first line.")
        return lines[0].strip()
    return db


def shown(url: str) -> str:
    """The URL as printed on the terminal: never its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def open_database(db: str) -> Engine:
    """The store behind ``--db`` (resolved as :func:`resolve_db_url` says), tables created."""
    from ..errors import MissingExtraError

    try:
        from sqlalchemy.exc import SQLAlchemyError

        from ..store.users import open_store
    except ImportError as exc:
        raise MissingExtraError(exc.name or "sqlalchemy", "api", "The user database") from exc
    url = resolve_db_url(db)
    try:
        return open_store(url)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise FracturescanError(f"Cannot open the database {shown(url)}: {reason}") from None
