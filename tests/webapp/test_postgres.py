"""The store on a real PostgreSQL server: users, keys, settings, the audit trail and its
append-only guard, UTC timestamps, and the REST API writing its audit rows there."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from fracturescan.store import apikeys, settings, users
from fracturescan.store.audit import ImageRecord, ModelRecord, audit_rows, record_analysis, record_feedback
from fracturescan.store.db import APPEND_ONLY_TABLES, AuditStudy, make_engine, utcnow

from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, png_bytes
from .pg_server import new_database, postgres_server

MODEL = ModelRecord("run", "sha256:abc (today)", "a" * 64, True)


@pytest.fixture(scope="module")
def server_url():
    yield from postgres_server()


@pytest.fixture
def pg_url(server_url: str) -> str:
    """A new empty database on the module's server, for one test."""
    return new_database(server_url)


@pytest.fixture
def pg_engine(pg_url: str):
    engine = make_engine(pg_url)
    assert engine.dialect.name == "postgresql"
    users.ensure_admin(engine, ADMIN_PASSWORD)
    users.create_user(engine, "drsmith", DOCTOR_PASSWORD, "doctor", actor="test")
    yield engine
    engine.dispose()


def test_users_login_lockout_and_settings(pg_engine) -> None:
    assert users.authenticate(pg_engine, "drsmith", DOCTOR_PASSWORD).role == "doctor"
    start = utcnow()
    for _ in range(users.MAX_FAILURES):
        with pytest.raises(users.AuthenticationError):
            users.authenticate(pg_engine, "drsmith", "wrong-password!", now=start)
    with pytest.raises(users.AuthenticationError, match="Too many failed attempts"):
        users.authenticate(pg_engine, "drsmith", DOCTOR_PASSWORD, now=start + timedelta(seconds=1))
    assert users.authenticate(pg_engine, "drsmith", DOCTOR_PASSWORD, now=start + timedelta(hours=1))
    settings.set_setting(pg_engine, settings.threshold_key("b" * 64), 0.42, actor="admin")
    assert settings.get_setting(pg_engine, settings.threshold_key("b" * 64)) == 0.42


def test_audit_trail_round_trips_with_utc_times(pg_engine) -> None:
    doctor = users.authenticate(pg_engine, "drsmith", DOCTOR_PASSWORD)
    before = utcnow()
    study = record_analysis(pg_engine, doctor, MODEL, 0.5, [ImageRecord("1" * 64, "png", 0.8),
                                                            ImageRecord("2" * 64, "dicom", 0.4, {"modality": "CR"})])
    record_feedback(pg_engine, doctor, study, agrees=False, note="old fracture")
    with Session(pg_engine) as session:
        row = session.get(AuditStudy, study)
    assert row.study_probability == pytest.approx(0.6) and row.abnormal is True
    assert row.created_at.tzinfo is not None and before - timedelta(seconds=5) <= row.created_at <= utcnow()
    rows = audit_rows(pg_engine)
    assert len(rows) == 2 and {r["image_sha256"] for r in rows} == {"1" * 64, "2" * 64}


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_the_database_refuses_to_change_audit_rows(pg_engine, table: str) -> None:
    doctor = users.authenticate(pg_engine, "drsmith", DOCTOR_PASSWORD)  # also writes an event row
    study = record_analysis(pg_engine, doctor, MODEL, 0.5, [ImageRecord("3" * 64, "png", 0.7)])
    record_feedback(pg_engine, doctor, study, agrees=True, note="")
    column = {"audit_studies": "threshold", "audit_images": "probability", "feedback": "agrees",
              "events": "detail"}[table]
    value = {"threshold": "0.1", "probability": "0.1", "agrees": "false", "detail": "'edited'"}[column]
    upsert = f"INSERT INTO {table} SELECT * FROM {table} ON CONFLICT (id) DO UPDATE SET {column} = {value}"
    for statement in (f"UPDATE {table} SET {column} = {value}", f"DELETE FROM {table}", f"TRUNCATE {table} CASCADE",
                      upsert):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
            with pg_engine.begin() as conn:
                conn.execute(text(statement))
    with pg_engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() >= 1


def test_make_engine_twice_keeps_data_and_triggers(pg_url: str, pg_engine) -> None:
    doctor = users.authenticate(pg_engine, "drsmith", DOCTOR_PASSWORD)
    record_analysis(pg_engine, doctor, MODEL, 0.5, [ImageRecord("4" * 64, "png", 0.2)])
    again = make_engine(pg_url)  # a second process starting (the app and the API share a database)
    assert len(audit_rows(again)) == 1
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
        with again.begin() as conn:
            conn.execute(text("DELETE FROM audit_images"))
    again.dispose()


def test_api_keys_and_an_api_prediction_on_postgres(pg_url: str, pg_engine, models_dir) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx2")
    from fastapi.testclient import TestClient

    from fracturescan.api.app import create_app
    from fracturescan.appconfig import AppConfig

    info, key = apikeys.create_key(pg_engine, "drsmith", "PACS", actor="admin")
    with TestClient(create_app(AppConfig(db_url=pg_url, models_dir=models_dir))) as client:
        response = client.post("/v1/predict", headers={"Authorization": f"Bearer {key}"},
                               files=[("files", ("a.png", png_bytes(3), "image/png"))])
    assert response.status_code == 200, response.text
    with Session(pg_engine) as session:
        study = session.get(AuditStudy, response.json()["audit_id"])
    assert study.username == "drsmith" and study.study_probability == pytest.approx(
        response.json()["study"]["probability"])
    apikeys.revoke_key(pg_engine, info.id, actor="admin")
    with pytest.raises(users.AuthenticationError):
        apikeys.authenticate_key(pg_engine, key)
