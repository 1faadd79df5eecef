"""The versioned schema of the app database (Alembic): which revision a database is at, bringing
it to the newest (``fracturescan db upgrade``), and the start-up check that refuses to run on an
older schema rather than fail later on a missing column.

Revisions live in ``store/migrations/versions``; a change to the tables in :mod:`.db` needs a new
revision there (``tests/store/test_migrations.py`` compares the two).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from fracturescan.errors import FracturescanError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Any constant: the PostgreSQL advisory lock that serialises schema work of several processes.
_PG_LOCK = 0x66726163


class SchemaError(FracturescanError):
    """The database's schema is not the one this version of fracturescan works with."""


@dataclass(frozen=True)
class Upgrade:
    """What ``upgrade`` did."""

    before: str | None  # revision before (None: an empty database)
    after: str
    stamped_unversioned: bool = False  # a database from before migrations existed was recognised


def _config(connection: Connection):  # noqa: ANN202  (alembic.config.Config)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of fracturescan knows."""
    return _script().get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database (None when it has no alembic_version table)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _unversioned_revision(connection: Connection) -> str | None:
    """For a database created before migrations existed: the revision its tables match (None
    when it holds no fracturescan tables at all)."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    if "users" not in tables:
        return None
    columns = {column["name"] for column in inspector.get_columns("api_keys")} if "api_keys" in tables else set()
    return "0002" if "expires_at" in columns else "0001"


def _lock(connection: Connection) -> None:
    # Two services starting at once (app and API) must not both create or migrate the schema.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to :func:`head_revision` (an empty one is created); every row stays."""
    from alembic import command

    with engine.begin() as connection:
        _lock(connection)
        before = current_revision(connection)
        stamped = False
        if before is None and (baseline := _unversioned_revision(connection)) is not None:
            command.stamp(_config(connection), baseline)
            before, stamped = baseline, True
            log.info("database from before schema versioning recognised as revision %s", baseline)
        command.upgrade(_config(connection), "head")
        after = current_revision(connection)
    from .db import _append_only_triggers

    _append_only_triggers(engine)  # present whatever the database went through before
    log.info("database schema at revision %s (was %s)", after, before or "empty")
    return Upgrade(before, after or head_revision(), stamped)


def ensure_current(engine: Engine) -> None:
    """At start-up: create the schema in an empty database; accept one at the newest revision;
    refuse an older one with what to do (back up, then ``fracturescan db upgrade``)."""
    head = head_revision()
    with engine.connect() as connection:
        revision = current_revision(connection)
        unversioned = _unversioned_revision(connection) if revision is None else None
    if revision == head:
        return
    if revision is None and unversioned is None:
        _create(engine)
        return
    found = revision or f"{unversioned} (from before schema versioning)"
    if revision is not None and revision not in _known_revisions():
        raise SchemaError(f"The database schema is at revision {revision}, newer than this fracturescan knows "
                          f"({head}): upgrade fracturescan, or restore a backup made for this version.")
    raise SchemaError(f"The database schema is at revision {found}; this fracturescan needs {head}. Back it up "
                      "(`fracturescan db backup FILE --db URL`), then run `fracturescan db upgrade --db URL`.")


def _create(engine: Engine) -> None:
    """An empty database: the tables as :mod:`.db` declares them, stamped with the newest
    revision (what running every migration gives, as tests/store/test_migrations.py checks, in a
    tenth of the time)."""
    from alembic import command

    from .db import Base

    with engine.begin() as connection:
        _lock(connection)
        if current_revision(connection) is not None:  # another process was first
            return
        Base.metadata.create_all(connection)
        command.stamp(_config(connection), "head")


@functools.cache
def _script():  # noqa: ANN202  (alembic.script.ScriptDirectory)
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def _known_revisions() -> set[str]:
    return {script.revision for script in _script().walk_revisions()}
