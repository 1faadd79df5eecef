"""Database schema and engine for the web app and the REST API: users, API keys, settings,
events and the audit trail.

SQLite (a file, WAL mode) is the default; any SQLAlchemy URL such as
``postgresql+psycopg://user:pass@host/db`` works the same. Timestamps are stored as UTC.

The audit tables (``audit_studies``, ``audit_images``, ``feedback``, ``events``) are append-only:
this package has no function that updates or deletes their rows, and on SQLite and PostgreSQL
triggers make the database itself refuse such statements.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger(__name__)

#: Tables whose rows are never changed or removed once written.
APPEND_ONLY_TABLES = ("audit_studies", "audit_images", "feedback", "events")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (one place, so tests can move the clock)."""
    return datetime.now(timezone.utc)


def format_utc(value: datetime | None, missing: str = "-") -> str:
    """A stored UTC time to the minute, as tables show it (``YYYY-MM-DD HH:MM``); ``missing`` for None."""
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else missing


class UTCDateTime(TypeDecorator):
    """Stores naive UTC; returns aware UTC, so SQLite and PostgreSQL behave the same."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Convert an aware datetime to naive UTC before it is written."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: pass timezone-aware UTC values")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Mark values read back as UTC."""
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every table of the app database."""


class User(Base):
    """A person who may log in, with role ``doctor`` or ``admin``."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Bumped on disable, role change and password reset: open sessions notice and end.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A REST API key of one user. Only the key's SHA-256 is stored; the key is shown once."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # The first characters of the key, so a user can tell keys apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # NULL: never


class Setting(Base):
    """One app setting (JSON text), e.g. the active model or a model's threshold."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64))


class AuditStudy(Base):
    """One analysis: a study of one or more images, the model, threshold and decision."""

    __tablename__ = "audit_studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(255))
    model_sha256: Mapped[str] = mapped_column(String(64))
    synthetic_model: Mapped[bool] = mapped_column(Boolean)
    threshold: Mapped[float] = mapped_column(Float)
    n_images: Mapped[int] = mapped_column(Integer)
    study_probability: Mapped[float] = mapped_column(Float)
    abnormal: Mapped[bool] = mapped_column(Boolean)


class AuditImage(Base):
    """One image of an analysed study: its SHA-256, probability, decision and flags (no file name)."""

    __tablename__ = "audit_images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("audit_studies.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    file_type: Mapped[str] = mapped_column(String(16))
    # Only the non-identifying fields of dicom_metadata_safe, as JSON; NULL for PNG/JPEG.
    dicom_info: Mapped[str | None] = mapped_column(Text, nullable=True)
    probability: Mapped[float] = mapped_column(Float)
    abnormal: Mapped[bool] = mapped_column(Boolean)
    # The decoded pixels as 8-bit PNG, only when the admin enabled storing them.
    pixels_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Why the image was not trusted (DICOM header, input guard), a JSON list of the fixed reason
    # texts ("[]": not flagged); NULL in rows written before the column existed (revision 0003).
    guard_flags: Mapped[str | None] = mapped_column(Text, nullable=True)


class Feedback(Base):
    """A doctor's agreement or disagreement with a study's decision (append-only)."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("audit_studies.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(64))
    agrees: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")


class Event(Base):
    """Security-relevant events (logins, user and setting changes), append-only."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the app read while another request writes; foreign keys are off by default.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _append_only_triggers(engine: Engine) -> None:
    """Make UPDATE and DELETE on the audit tables fail inside the database too (SQLite and
    PostgreSQL; on PostgreSQL also TRUNCATE). Other databases rely on this package alone."""
    dialect = engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        log.warning("audit tables are append-only by this package only: no database triggers for %s", dialect)
        return
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION fracturescan_append_only() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql"
            ))
        for table in APPEND_ONLY_TABLES:
            if dialect == "sqlite":
                for op in ("UPDATE", "DELETE"):
                    conn.execute(text(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    ))
                # INSERT OR REPLACE / REPLACE INTO delete the clashing row without firing DELETE
                # triggers (unless the writer turned recursive_triggers on), so an insert that
                # reuses an existing id is refused before it gets that far; an upsert too.
                conn.execute(text(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "
                    f"WHEN EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id) "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                ))
                continue
            for name, when in ((f"{table}_no_change", "UPDATE OR DELETE ON {t} FOR EACH ROW"),
                               (f"{table}_no_truncate", "TRUNCATE ON {t} FOR EACH STATEMENT")):
                conn.execute(text(f"CREATE OR REPLACE TRIGGER {name} BEFORE {when.format(t=table)} "
                                  "EXECUTE FUNCTION fracturescan_append_only()"))  # PostgreSQL >= 14


def connect(url: str) -> Engine:
    """The engine for ``url`` with fracturescan's connection settings; changes nothing in the
    database (for checks and backups of a database that must stay as it is)."""
    is_sqlite = url.startswith("sqlite")
    # A database server restart leaves dead connections in the pool: test each before use, so
    # the first request after a restart does not fail.
    engine = create_engine(url, connect_args={"check_same_thread": False} if is_sqlite else {},
                           pool_pre_ping=not is_sqlite)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_engine(url: str) -> Engine:
    """The engine for ``url``: an empty database gets the schema, one at the newest revision is
    used as it is, an older one is refused until ``fracturescan db upgrade``
    (:func:`.schema.ensure_current`); the audit tables' triggers are (re)created."""
    from .schema import ensure_current

    engine = connect(url)
    ensure_current(engine)
    _append_only_triggers(engine)
    log.info("app database ready (%s)", engine.url.render_as_string(hide_password=True))
    return engine
