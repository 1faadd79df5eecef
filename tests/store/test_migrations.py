"""Schema migrations (Alembic): a database made with an earlier release's schema is upgraded with
every row intact, on SQLite and on a real PostgreSQL server; the migrations build exactly the
schema store/db.py declares; the app refuses an outdated schema with what to do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("alembic")
sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import text  # noqa: E402

from fracturescan.cli.main import main  # noqa: E402
from fracturescan.store.db import APPEND_ONLY_TABLES, Base, connect, make_engine  # noqa: E402
from fracturescan.store.schema import SchemaError, head_revision  # noqa: E402

from ..webapp.pg_server import new_database, postgres_server  # noqa: E402

# The schema of commit c608d5f (27 Nov 2026, PostgreSQL triggers; before API keys expired), as
# SQLAlchemy emitted it then. Columns are the same on both databases; the types differ.
_OLD_TABLES = """
CREATE TABLE events (id {serial} NOT NULL, created_at {ts} NOT NULL, actor VARCHAR(64) NOT NULL,
    action VARCHAR(64) NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_events_created_at ON events (created_at);
CREATE TABLE settings ("key" VARCHAR(128) NOT NULL, value TEXT NOT NULL, updated_at {ts} NOT NULL,
    updated_by VARCHAR(64) NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE users (id {serial} NOT NULL, username VARCHAR(64) NOT NULL, password_hash VARCHAR(255) NOT NULL,
    role VARCHAR(16) NOT NULL, active BOOLEAN NOT NULL, must_change_password BOOLEAN NOT NULL,
    failed_logins INTEGER NOT NULL, locked_until {ts}, session_version INTEGER NOT NULL,
    created_at {ts} NOT NULL, PRIMARY KEY (id));
CREATE UNIQUE INDEX ix_users_username ON users (username);
CREATE TABLE api_keys (id {serial} NOT NULL, user_id INTEGER NOT NULL, name VARCHAR(64) NOT NULL,
    prefix VARCHAR(16) NOT NULL, key_sha256 VARCHAR(64) NOT NULL, created_at {ts} NOT NULL,
    revoked_at {ts}, last_used_at {ts}, PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE INDEX ix_api_keys_user_id ON api_keys (user_id);
CREATE UNIQUE INDEX ix_api_keys_key_sha256 ON api_keys (key_sha256);
CREATE TABLE audit_studies (id {serial} NOT NULL, created_at {ts} NOT NULL, user_id INTEGER NOT NULL,
    username VARCHAR(64) NOT NULL, model_id VARCHAR(255) NOT NULL, model_version VARCHAR(255) NOT NULL,
    model_sha256 VARCHAR(64) NOT NULL, synthetic_model BOOLEAN NOT NULL, threshold FLOAT NOT NULL,
    n_images INTEGER NOT NULL, study_probability FLOAT NOT NULL, abnormal BOOLEAN NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE INDEX ix_audit_studies_created_at ON audit_studies (created_at);
CREATE TABLE audit_images (id {serial} NOT NULL, study_id INTEGER NOT NULL, position INTEGER NOT NULL,
    sha256 VARCHAR(64) NOT NULL, file_type VARCHAR(16) NOT NULL, dicom_info TEXT, probability FLOAT NOT NULL,
    abnormal BOOLEAN NOT NULL, pixels_png {blob}, PRIMARY KEY (id),
    FOREIGN KEY(study_id) REFERENCES audit_studies (id));
CREATE INDEX ix_audit_images_study_id ON audit_images (study_id);
CREATE INDEX ix_audit_images_sha256 ON audit_images (sha256);
CREATE TABLE feedback (id {serial} NOT NULL, study_id INTEGER NOT NULL, created_at {ts} NOT NULL,
    user_id INTEGER NOT NULL, username VARCHAR(64) NOT NULL, agrees BOOLEAN NOT NULL, note TEXT NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(study_id) REFERENCES audit_studies (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE INDEX ix_feedback_study_id ON feedback (study_id);
"""
_OLD_TYPES = {"sqlite": {"serial": "INTEGER", "ts": "DATETIME", "blob": "BLOB"},
              "postgresql": {"serial": "SERIAL", "ts": "TIMESTAMP WITHOUT TIME ZONE", "blob": "BYTEA"}}
_OLD_PG_FUNCTION = ("CREATE OR REPLACE FUNCTION fracturescan_append_only() RETURNS trigger AS $$ "
                    "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql")
# Rows an old installation would hold: an admin and a doctor, a key, two analyses, feedback, events.
# The doctor's key is fsk_old-release-key (its SHA-256 below).
_OLD_ROWS = """
INSERT INTO users VALUES (1, 'admin', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA', 'admin', TRUE, FALSE, 0, NULL, 1, '2026-11-20 08:00:00');
INSERT INTO users VALUES (2, 'drsmith', '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA', 'doctor', TRUE, FALSE, 1, NULL, 2, '2026-11-20 08:05:00');
INSERT INTO api_keys VALUES (1, 2, 'PACS bridge', 'fsk_old-relea', '{key_sha}', '2026-11-21 09:00:00', NULL, '2026-11-22 10:00:00');
INSERT INTO settings VALUES ('active_model', '"run_a"', '2026-11-21 09:30:00', 'admin');
INSERT INTO audit_studies VALUES (1, '2026-11-22 10:00:00', 2, 'drsmith', 'run_a', 'sha256:aaaa (2026-11-01)', '{sha}', TRUE, 0.5, 2, 0.625, TRUE);
INSERT INTO audit_studies VALUES (2, '2026-11-22 11:00:00', 2, 'drsmith', 'run_a', 'sha256:aaaa (2026-11-01)', '{sha}', TRUE, 0.5, 1, 0.125, FALSE);
INSERT INTO audit_images VALUES (1, 1, 0, '{sha}', 'png', NULL, 0.75, TRUE, NULL);
INSERT INTO audit_images VALUES (2, 1, 1, '{sha}', 'dicom', '{{"Modality": "CR"}}', 0.5, TRUE, {png});
INSERT INTO audit_images VALUES (3, 2, 0, '{sha}', 'jpeg', NULL, 0.125, FALSE, NULL);
INSERT INTO feedback VALUES (1, 1, '2026-11-22 10:05:00', 2, 'drsmith', FALSE, 'callus, not a fracture');
INSERT INTO events VALUES (1, '2026-11-20 08:00:00', 'system', 'create_user', 'admin (admin)');
INSERT INTO events VALUES (2, '2026-11-22 09:59:00', 'drsmith', 'login', '');
"""
OLD_KEY = "fsk_old-release-key"


def _old_database(url: str) -> None:
    """Write the old schema, its triggers and rows with plain SQL (no fracturescan code)."""
    import hashlib

    engine = sqlalchemy.create_engine(url)
    dialect = engine.dialect.name
    statements = _OLD_TABLES.format(**_OLD_TYPES[dialect]).split(";")
    if dialect == "postgresql":
        statements.append(_OLD_PG_FUNCTION)
    for table in APPEND_ONLY_TABLES:
        if dialect == "sqlite":
            statements += [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for op in ("UPDATE", "DELETE")]
        else:
            statements += [f"CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION fracturescan_append_only()",
                           f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                           "FOR EACH STATEMENT EXECUTE FUNCTION fracturescan_append_only()"]
    png = "X'89504e47'" if dialect == "sqlite" else "'\\x89504e47'::bytea"
    rows = _OLD_ROWS.format(key_sha=hashlib.sha256(OLD_KEY.encode()).hexdigest(), sha="a" * 64, png=png)
    with engine.begin() as conn:
        for statement in statements + rows.split(";\n"):
            if statement.strip():
                conn.execute(text(statement.strip().rstrip(";").replace(":", "\\:")))
        if dialect == "postgresql":  # explicit ids above: move the sequences past them
            for table in ("users", "api_keys", "audit_studies", "audit_images", "feedback", "events"):
                conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    engine.dispose()


def _contents(url: str) -> dict[str, list[tuple]]:
    """Every row of every table (as the old schema had them), in id order."""
    engine = connect(url)
    try:
        with engine.connect() as conn:
            return {table: [tuple(row) for row in conn.execute(text(
                f"SELECT * FROM {table} ORDER BY 1"))] for table in Base.metadata.tables}
    finally:
        engine.dispose()


def _without_added_columns(contents: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """The upgraded rows without the columns the upgrade added (the last one of api_keys, 0002,
    and of audit_images, 0003)."""
    assert all(row[-1] is None for row in contents["api_keys"])  # old keys keep never expiring
    assert all(row[-1] is None for row in contents["audit_images"])  # old images: flags not recorded
    return {**contents, "api_keys": [row[:-1] for row in contents["api_keys"]],
            "audit_images": [row[:-1] for row in contents["audit_images"]]}


def _check_upgrade_keeps_every_row(url: str, capsys: pytest.CaptureFixture) -> None:
    from fracturescan.store.apikeys import authenticate_key
    from fracturescan.store.health import check_database

    _old_database(url)
    before = _contents(url)
    with pytest.raises(SchemaError, match="this fracturescan needs 0003.*fracturescan db upgrade"):
        make_engine(url)  # the services refuse to start on the old schema
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "from revision 0001 to 0003 (recognised a database from before schema versioning)" in capsys.readouterr().out
    assert _without_added_columns(_contents(url)) == before
    engine = make_engine(url)  # starts now
    assert authenticate_key(engine, OLD_KEY).username == "drsmith"  # the old key still works
    status = check_database(engine)
    assert status.writable and status.refuses_changes and not status.unprotected
    engine.dispose()
    assert main(["db", "upgrade", "--db", url]) == 0
    assert "already at revision 0003" in capsys.readouterr().out


def _check_migrations_match_the_models(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from fracturescan.store.schema import upgrade

    engine = connect(url)
    result = upgrade(engine)  # an empty database, built revision by revision
    assert (result.before, result.after) == (None, head_revision())
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    # A change to store/db.py needs a revision in store/migrations/versions that makes the same change.
    assert differences == []


def test_sqlite_upgrade_from_the_schema_before_key_expiry(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _check_upgrade_keeps_every_row(f"sqlite:///{tmp_path / 'old.db'}", capsys)


def test_sqlite_migrations_build_the_declared_schema(tmp_path: Path) -> None:
    _check_migrations_match_the_models(f"sqlite:///{tmp_path / 'new.db'}")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    make_engine(url).dispose()
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(SchemaError, match="0099, newer than this fracturescan knows"):
        make_engine(url)


@pytest.fixture(scope="module")
def pg_server():
    yield from postgres_server()


def test_postgresql_upgrade_from_the_schema_before_key_expiry(pg_server: str, capsys: pytest.CaptureFixture) -> None:
    _check_upgrade_keeps_every_row(new_database(pg_server), capsys)


def test_postgresql_migrations_build_the_declared_schema(pg_server: str) -> None:
    _check_migrations_match_the_models(new_database(pg_server))
