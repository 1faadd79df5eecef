"""Self-checks of the app database for ``fracturescan doctor``: reachable, writable, and the
audit tables protected by the database itself (append-only triggers present and working).

Every probe runs inside a transaction that is rolled back, so a check leaves no row behind (on
PostgreSQL it may use up a value of the events id sequence, which only leaves a gap).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, insert, inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .db import APPEND_ONLY_TABLES, Base, Event, utcnow

#: PostgreSQL pg_trigger.tgtype bits (catalog/pg_trigger.h).
_PG_BEFORE, _PG_DELETE, _PG_UPDATE, _PG_TRUNCATE = 2, 8, 16, 32


@dataclass(frozen=True)
class DatabaseStatus:
    """What the database probes found."""

    reachable: bool
    writable: bool
    server: str  # dialect and server version, or the connection error
    #: Each append-only table's missing protections, e.g. {"events": ["DELETE"]}; empty when all present.
    unprotected: dict[str, list[str]]
    #: Whether an UPDATE, a DELETE (and on SQLite an INSERT OR REPLACE) of a probe row in
    #: ``events`` were refused by the database.
    refuses_changes: bool
    #: fracturescan tables the database lacks (all of them in an empty database).
    missing_tables: tuple[str, ...] = ()


def _short(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background link."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


def _protected_operations(engine: Engine) -> dict[str, set[str]]:
    """{table: operations a BEFORE trigger refuses}, read from the database catalogue."""
    found: dict[str, set[str]] = {table: set() for table in APPEND_ONLY_TABLES}
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"))
            for table, sql in rows:
                words = " ".join((sql or "").upper().split())
                # A BEFORE INSERT guard is what stops INSERT OR REPLACE from overwriting a row.
                for trigger_op, op in (("UPDATE", "UPDATE"), ("DELETE", "DELETE"), ("INSERT", "REPLACE")):
                    if table in found and f"BEFORE {trigger_op}" in words and "RAISE(ABORT" in words.replace(" ", ""):
                        found[table].add(op)
        elif engine.dialect.name == "postgresql":
            rows = conn.execute(text(
                "SELECT c.relname, t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND c.relname = ANY(:tables)"),
                {"tables": list(APPEND_ONLY_TABLES)})
            for table, tgtype in rows:
                if tgtype & _PG_BEFORE:
                    for bit, op in ((_PG_UPDATE, "UPDATE"), (_PG_DELETE, "DELETE"), (_PG_TRUNCATE, "TRUNCATE")):
                        if tgtype & bit:
                            found[table].add(op)
    return found


def _expected_operations(dialect: str) -> tuple[str, ...]:
    return ("UPDATE", "DELETE", "TRUNCATE") if dialect == "postgresql" else ("UPDATE", "DELETE", "REPLACE")


def _probe(engine: Engine, change: str) -> tuple[bool, bool]:
    """Insert a probe event, then try ``change`` ('UPDATE', 'DELETE' or, on SQLite, 'REPLACE')
    on it; roll back.

    Returns (insert worked, change refused)."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            try:
                row_id = conn.execute(insert(Event).values(
                    created_at=utcnow(), actor="doctor", action="doctor_probe",
                    detail="rolled back")).inserted_primary_key[0]
            except SQLAlchemyError:
                return False, False
            statement = {"UPDATE": "UPDATE events SET detail = 'changed' WHERE id = :id",
                         "DELETE": "DELETE FROM events WHERE id = :id",
                         "REPLACE": "INSERT OR REPLACE INTO events (id, created_at, actor, action, detail) "
                                    "VALUES (:id, :now, 'doctor', 'doctor_probe', 'replaced')"}[change]
            try:
                conn.execute(text(statement), {"id": row_id, "now": utcnow().replace(tzinfo=None)})
            except DBAPIError:
                return True, True
            return True, False
        finally:
            trans.rollback()


def check_database(engine: Engine) -> DatabaseStatus:
    """Probe ``engine``: connection, a rolled-back write, the append-only triggers."""
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT sqlite_version()" if engine.dialect.name == "sqlite"
                                        else "SELECT current_setting('server_version')")).scalar_one()
    except SQLAlchemyError as exc:
        return DatabaseStatus(False, False, _short(exc), {}, False)
    server = f"{engine.dialect.name} {version}"
    missing = tuple(sorted(set(Base.metadata.tables) - set(inspect(engine).get_table_names())))
    if missing:
        return DatabaseStatus(True, False, server, {}, False, missing)
    try:
        protected = _protected_operations(engine)
        unprotected = {table: [op for op in _expected_operations(engine.dialect.name) if op not in ops]
                       for table, ops in protected.items()}
        unprotected = {table: ops for table, ops in unprotected.items() if ops}
        changes = ("UPDATE", "DELETE") + (("REPLACE",) if engine.dialect.name == "sqlite" else ())
        writable, refused = _probe(engine, changes[0])
        for change in changes[1:] if writable else ():
            refused = _probe(engine, change)[1] and refused
    except SQLAlchemyError as exc:  # e.g. the tables do not exist yet
        return DatabaseStatus(True, False, f"{server}; {_short(exc)}", {}, False)
    return DatabaseStatus(True, writable, server, unprotected, writable and refused)
