"""Store tests: lock-out, password rules, append-only audit tables, CSV export, hygiene."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from .conftest import DOCTOR_PASSWORD

from fracturescan.store import settings, users  # noqa: E402
from fracturescan.store.audit import (  # noqa: E402
    AUDIT_COLUMNS, ImageRecord, ModelRecord, audit_csv, audit_rows, record_analysis, record_feedback,
)
from fracturescan.store.db import APPEND_ONLY_TABLES, utcnow  # noqa: E402
from fracturescan.appconfig import AppConfig  # noqa: E402
from fracturescan.service import discover_models  # noqa: E402

MODEL = ModelRecord("run_x", "sha256:abc", "ab" * 32, synthetic=True)


def test_lockout_doubles_and_expires(engine) -> None:
    now = utcnow()
    for _ in range(users.MAX_FAILURES):
        with pytest.raises(users.AuthenticationError, match="Wrong"):
            users.authenticate(engine, "drsmith", "wrong-password!", now=now)
    # Locked now: even the right password is refused, with the wait in seconds.
    with pytest.raises(users.AuthenticationError, match=r"try again in (\d+) s"):
        users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=now)
    after_first = now + users.BASE_LOCK + timedelta(seconds=1)
    with pytest.raises(users.AuthenticationError, match="Wrong"):
        users.authenticate(engine, "drsmith", "wrong-again!!", now=after_first)
    # The 6th failure locks for twice the base time.
    with pytest.raises(users.AuthenticationError, match="try again in 6[01] s"):
        users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=after_first)
    later = after_first + 2 * users.BASE_LOCK + timedelta(seconds=1)
    assert users.authenticate(engine, "drsmith", DOCTOR_PASSWORD, now=later).username == "drsmith"


def test_lock_duration_is_capped() -> None:
    assert users._lock_for(users.MAX_FAILURES - 1) == timedelta(0)
    assert users._lock_for(users.MAX_FAILURES + 2) == 4 * users.BASE_LOCK
    assert users._lock_for(100) == users.MAX_LOCK


def test_password_rules_and_hashing(engine) -> None:
    with pytest.raises(users.UserAdminError, match="at least 12"):
        users.create_user(engine, "short", "11-chars-xx", "doctor", actor="t")
    with pytest.raises(users.UserAdminError, match="already exists"):
        users.create_user(engine, "drsmith", "another-long-pass", "doctor", actor="t")
    with pytest.raises(users.UserAdminError, match="Unknown role"):
        users.create_user(engine, "x", "another-long-pass", "nurse", actor="t")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE username='drsmith'")).scalar()
    assert stored.startswith("$argon2id$") and DOCTOR_PASSWORD not in stored


def test_last_admin_cannot_be_disabled_or_demoted(engine) -> None:
    with pytest.raises(users.UserAdminError, match="last active admin"):
        users.set_active(engine, "admin", False, actor="admin")
    with pytest.raises(users.UserAdminError, match="last active admin"):
        users.set_role(engine, "admin", "doctor", actor="admin")
    users.set_role(engine, "drsmith", "admin", actor="admin")
    users.set_active(engine, "admin", False, actor="drsmith")  # allowed: another admin exists
    assert not users.get_user(engine, 1).active


def test_first_start_prints_one_time_password(tmp_path: Path) -> None:
    from fracturescan.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    one_time = users.ensure_admin(engine, None)
    assert one_time and len(one_time) >= users.MIN_PASSWORD_LENGTH
    admin = users.authenticate(engine, "admin", one_time)
    assert admin.role == "admin" and admin.must_change_password
    assert users.ensure_admin(engine, None) is None  # only on an empty user table
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_audit_tables_are_append_only_in_the_database(engine) -> None:
    user = users.get_user(engine, 2)
    study = record_analysis(engine, user, MODEL, 0.5, [ImageRecord("0" * 64, "png", 0.7)])
    record_feedback(engine, user, study, True, "ok")
    for table in APPEND_ONLY_TABLES:
        for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
            with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
                with engine.begin() as conn:
                    conn.execute(text(statement))


def test_store_code_never_updates_or_deletes_audit_rows() -> None:
    import fracturescan.store.audit as audit_module

    source = Path(audit_module.__file__).read_text()
    for forbidden in ("update(", "delete(", "session.merge", ".execute("):
        assert forbidden not in source


def test_audit_rows_and_csv_export(engine) -> None:
    user = users.get_user(engine, 2)
    probs = [0.2, 0.9, 0.4]
    first = record_analysis(engine, user, MODEL, 0.45, [ImageRecord(f"{i}" * 64, "png", p)
                                                        for i, p in enumerate(probs)])
    second = record_analysis(engine, user, MODEL, 0.45, [ImageRecord("f" * 64, "dicom", 0.1)])
    record_feedback(engine, user, first, False, "missed, see lateral view")
    rows = audit_rows(engine)
    assert [r["study_id"] for r in rows] == [second, first, first, first]  # newest first
    mean = sum(probs) / 3
    assert rows[1]["study_probability"] == pytest.approx(mean, abs=1e-6)
    assert rows[1]["study_abnormal"] == (mean >= 0.45)
    assert [r["image_abnormal"] for r in rows[1:]] == [p >= 0.45 for p in probs]
    assert "disagree (missed, see lateral view)" in rows[1]["feedback"] and rows[0]["feedback"] == ""
    parsed = list(csv.DictReader(io.StringIO(audit_csv(rows))))
    assert tuple(parsed[0].keys()) == AUDIT_COLUMNS and len(parsed) == 4
    assert [float(r["image_probability"]) for r in parsed[1:]] == pytest.approx(probs)
    assert audit_rows(engine, username="nobody") == []
    assert audit_rows(engine, since=utcnow() + timedelta(minutes=1)) == []


def test_settings_round_trip(engine) -> None:
    assert settings.get_setting(engine, settings.STORE_PIXELS, False) is False
    settings.set_setting(engine, settings.STORE_PIXELS, True, actor="admin")
    settings.set_setting(engine, settings.threshold_key("ab"), 0.37, actor="admin")
    assert settings.get_setting(engine, settings.STORE_PIXELS) is True
    assert settings.get_setting(engine, settings.threshold_key("ab")) == 0.37


def test_discover_models_finds_runs_and_skips_other_folders(models_dir: Path) -> None:
    found = discover_models(models_dir, [models_dir / "run_b"])
    assert [m.model_id for m in found] == ["run_a", "run_b"]  # run_b listed once
    assert found[0].path.name == "best" and found[0].metadata.synthetic
    assert found[1].metadata.threshold == pytest.approx(0.3)


def test_config_round_trips_through_the_environment(tmp_path: Path) -> None:
    config = AppConfig(db_url="sqlite:///x.db", models_dir=tmp_path, model_paths=(tmp_path / "a",),
                       idle_minutes=5.0, max_hours=1.0)
    assert AppConfig.from_env(config.to_env()) == config


def test_training_path_does_not_import_app_dependencies() -> None:
    code = ("import sys, fracturescan.cli.main, fracturescan.inference, fracturescan.training.loop; "
            "print(sorted(m for m in ('streamlit', 'sqlalchemy', 'argon2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_app_command_refuses_missing_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fracturescan.cli.main import main

    assert main(["app", "--db", f"sqlite:///{tmp_path / 'a.db'}"]) == 1
    assert main(["app", "--models", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "Give --models DIR" in err and "is not a folder" in err
