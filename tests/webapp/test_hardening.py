"""Hardening of the web app: upload limit, crafted session state, no PHI leak, login timing.

The crash-safety of the audit log (kill -9 of a writer) is in ``test_audit_crash.py``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, png_bytes
from .test_app import assert_login_only, login, new_app, texts

from fracturescan.errors import ConfigError, ImageReadError  # noqa: E402
from fracturescan.store import settings, users  # noqa: E402
from fracturescan.store.db import AuditImage, AuditStudy, Event, Feedback  # noqa: E402
from fracturescan import service  # noqa: E402
from fracturescan.appconfig import ENV_MAX_UPLOAD_MB, AppConfig  # noqa: E402
from fracturescan.webapp.main import ADMIN_PAGES  # noqa: E402


def _analyse(at, *files: tuple[str, bytes, str]):
    at.get("file_uploader")[0].set_value(list(files))
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    return at.run()


def _counts(engine) -> tuple[int, int]:
    with Session(engine) as s:
        return (len(s.scalars(select(AuditStudy)).all()), len(s.scalars(select(AuditImage)).all()))


# --------------------------------------------------------------------------- upload size limit

def test_upload_limit_boundary_is_exact() -> None:
    service.check_upload_size("a.png", 1000, 1000)  # at the limit: accepted
    service.check_upload_size("a.png", 10**9, None)  # no limit configured
    with pytest.raises(ImageReadError, match=r"a\.png is 0\.0 MB, more than the 0\.001 MB limit"):
        service.check_upload_size("a.png", 1001, 1000)


def test_oversized_upload_shows_a_message_writes_nothing_and_the_app_keeps_working(
        engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MAX_UPLOAD_MB, "0.01")  # 10,000 bytes
    big, small = png_bytes(7, (200, 200)), png_bytes(8, (40, 40))
    assert len(big) > 10_000 > len(small)  # random pixels do not compress
    decoded: list[str] = []
    real_read = service.read_image
    monkeypatch.setattr(service, "read_image",
                        lambda data, name=None, **kw: decoded.append(name) or real_read(data, name=name, **kw))

    at = _analyse(login(new_app(), "drsmith", DOCTOR_PASSWORD), ("big.png", big, "image/png"))
    assert not at.exception
    refusals = [e.value for e in at.error if "big\\.png" in e.value]  # the name, Markdown-escaped
    shown = re.sub(r"\\(.)", r"\1", refusals[0]) if refusals else ""  # as rendered: escapes removed
    assert len(refusals) == 1 and "more than the 0.01 MB limit per file" in shown
    assert "None of the files could be analysed" in texts(at)
    assert decoded == [] and _counts(engine) == (0, 0)  # refused before decoding, no audit row

    # The next upload of the same session is analysed and audited normally.
    at = _analyse(at, ("small.png", small, "image/png"))
    assert not at.exception and not any("could not be analysed" in e.value for e in at.error)
    assert decoded == ["small.png"] and _counts(engine) == (1, 1)
    with Session(engine) as s:
        assert s.scalars(select(AuditImage)).one().sha256 == hashlib.sha256(small).hexdigest()


def test_oversized_file_in_a_study_is_skipped_and_the_rest_is_audited(
        engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MAX_UPLOAD_MB, "0.01")
    at = _analyse(login(new_app(), "drsmith", DOCTOR_PASSWORD),
                  ("ok.png", png_bytes(1, (40, 40)), "image/png"),
                  ("big.png", png_bytes(2, (200, 200)), "image/png"))
    assert any("big\\.png" in e.value and "limit" in e.value for e in at.error)
    with Session(engine) as s:
        study = s.scalars(select(AuditStudy)).one()
    assert study.n_images == 1 and _counts(engine) == (1, 1)


def test_upload_limit_config_round_trips_and_rejects_nonsense() -> None:
    config = AppConfig(max_upload_mb=7.5)
    assert AppConfig.from_env(config.to_env()).max_upload_mb == 7.5
    assert config.max_upload_bytes == 7_500_000 and config.streamlit_max_upload_mb == 8
    assert AppConfig.from_env({}).max_upload_mb == 50.0
    with pytest.raises(ConfigError, match=ENV_MAX_UPLOAD_MB):
        AppConfig.from_env({ENV_MAX_UPLOAD_MB: "fifty"})
    with pytest.raises(ConfigError, match="positive"):
        AppConfig(max_upload_mb=0)


@pytest.mark.parametrize(("flag", "streamlit_mb", "app_mb"), [([], "50", 50.0),
                                                               (["--max-upload-mb", "7.5"], "8", 7.5)])
def test_app_launcher_passes_the_limit_to_streamlit_and_the_app(
        flag: list[str], streamlit_mb: str, app_mb: float, models_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from fracturescan.cli.main import main

    launched: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: launched.append((cmd, env)) or 0)
    assert main(["app", "--models", str(models_dir), "--db", f"sqlite:///{tmp_path / 'a.db'}", *flag]) == 0
    command, env = launched[0]
    assert command[command.index("--server.maxUploadSize") + 1] == streamlit_mb
    assert AppConfig.from_env(env).max_upload_mb == app_mb


# --------------------------------------------------------------------------- crafted session state

def _admin_page_absent(at) -> None:
    """None of the admin pages' content or navigation is on the page."""
    assert not at.exception
    assert len(at.dataframe) == 0 and len(at.number_input) == 0 and len(at.selectbox) == 0
    assert {t.key for t in at.text_input} <= {"login_username", "login_password"}
    assert not {"Users", "Model and settings", "Audit log"} & {h.value for h in at.header}
    assert not {"Users", "Model & settings", "Audit log"} & {b.label for b in at.sidebar.button}


def _tamper_role(record: dict, admin: users.UserInfo) -> dict:
    return {**record, "role": "admin", "is_admin": True}


def _tamper_user_id(record: dict, admin: users.UserInfo) -> dict:
    return {**record, "user_id": admin.id, "session_version": admin.session_version}


def _tamper_extend_login(record: dict, admin: users.UserInfo) -> dict:
    return {**record, "login_at": record["login_at"].replace(year=record["login_at"].year + 1)}


@pytest.mark.parametrize("page", ADMIN_PAGES)
@pytest.mark.parametrize("tamper", [_tamper_role, _tamper_user_id, _tamper_extend_login],
                         ids=["role_field", "admin_user_id", "extended_login"])
def test_doctor_editing_session_state_cannot_reach_admin_pages(engine, tamper, page: str) -> None:
    admin = users.get_user(engine, 1)
    assert admin is not None and admin.role == "admin"
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    record = at.session_state["auth_session"]
    assert record["user_id"] == 2  # the test edits the real session record
    at.session_state["auth_session"] = tamper(dict(record), admin)
    # Keys a naive implementation might trust; this one must ignore them.
    at.session_state["role"] = "admin"
    at.session_state["auth_user"] = admin
    at.session_state["user"] = admin
    at.query_params["page"] = page
    at.run()
    _admin_page_absent(at)
    if tamper is _tamper_role:  # the seal is intact: still the doctor, refused by role from the DB
        assert "You do not have access to this page." in [e.value for e in at.error]
        assert [b.label for b in at.sidebar.button] == ["Analyse", "My account", "Log out"]
    else:  # the seal is broken: logged out
        assert_login_only(at)
        assert "could not be verified" in texts(at)
        with Session(engine) as s:
            assert s.scalars(select(Event).where(Event.action == "session_tampered")).all()
    at.run()  # and the next action still is not an admin one
    _admin_page_absent(at)


def test_role_is_read_from_the_database_on_every_run(engine) -> None:
    at = login(new_app(), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = "users"
    at.run()
    assert any(h.value == "Users" for h in at.header)
    # Demote behind the app's back (no session-version bump): the very next run must refuse.
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET role = 'doctor' WHERE username = 'admin'"))
    at.run()
    _admin_page_absent(at)
    assert "You do not have access to this page." in [e.value for e in at.error]


def test_disabled_user_is_logged_out_before_their_next_action_takes_effect(engine) -> None:
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    at.get("file_uploader")[0].set_value(("a.png", png_bytes(1), "image/png"))
    at.run()
    users.set_active(engine, "drsmith", False, actor="admin")
    next(b for b in at.button if b.label == "Analyse images").click()
    at.run()
    assert_login_only(at)
    assert "disabled" in texts(at) and _counts(engine) == (0, 0)  # the click did nothing


# --------------------------------------------------------------------------- no PHI anywhere

SENTINELS = {
    "PatientName": "SENTINEL^NAME", "PatientID": "SENTINEL-ID-123", "PatientBirthDate": "19010101",
    "AccessionNumber": "SENTINELACC", "InstitutionName": "SENTINEL HOSPITAL",
    "InstitutionAddress": "SENTINEL ROAD 1", "ReferringPhysicianName": "SENTINEL^REFERRER",
    "OperatorsName": "SENTINEL^OPERATOR", "PerformingPhysicianName": "SENTINEL^PERFORMER",
    "StationName": "SENTINELSTATION", "StudyDate": "19020202", "StudyID": "SENTSTUDY9",
    "OtherPatientIDs": "SENTINEL-OTHER-9", "StudyDescription": "SENTINEL WRIST",
}
#: Substrings that must never be written (distinctive enough not to occur by chance).
FORBIDDEN = ("SENTINEL", "Sentinel", "sentinel", "19010101", "19020202", "SENTSTUDY9")


def _sentinel_dicom() -> bytes:
    from tests.reliability.bad_inputs import dicom_bytes, dicom_dataset, gradient

    ds = dicom_dataset(gradient(96, 80, np.uint16), BodyPartExamined="WRIST", ViewPosition="PA")
    for key, value in SENTINELS.items():
        setattr(ds, key, value)
    return dicom_bytes(ds)


def _leaks(data: bytes | str) -> list[str]:
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [s for s in FORBIDDEN if s.encode() in raw]


def test_no_identifying_dicom_tag_reaches_the_database_logs_or_csv(
        engine, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    import streamlit

    pytest.importorskip("pydicom")
    data = _sentinel_dicom()
    assert all(v.encode() in data for v in SENTINELS.values())  # the file really carries them
    settings.set_setting(engine, settings.STORE_PIXELS, True, actor="admin")  # store pixels too
    exported: list[str] = []
    real_download = streamlit.download_button
    monkeypatch.setattr(streamlit, "download_button",
                        lambda label, data, *a, **kw: exported.append(data) or real_download(label, data, *a, **kw))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
        # After the app installed its log handler, so no level it sets hides DEBUG records.
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="fracturescan")
        # A file name carrying the patient's name is common in practice: it must not leak either.
        at = _analyse(at, ("SENTINEL^NAME_wrist.dcm", data, "application/dicom"))
        assert not at.exception and not any("could not be analysed" in e.value for e in at.error)
        at.radio[0].set_value("Disagree")
        at.text_area[0].input("Cortex intact")
        next(b for b in at.button if b.label == "Save feedback").click()
        at.run()
        admin_at = login(new_app(), "admin", ADMIN_PASSWORD)
        admin_at.query_params["page"] = "audit"
        admin_at.run()
    assert not admin_at.exception

    with Session(engine) as s:  # the analysis really was stored, with its DICOM facts
        image = s.scalars(select(AuditImage)).one()
        assert image.file_type == "dicom" and image.sha256 == hashlib.sha256(data).hexdigest()
        assert '"WRIST"' in image.dicom_info and image.pixels_png.startswith(b"\x89PNG")
        assert s.scalars(select(Feedback)).one().note == "Cortex intact"
    audit_export = [e for e in exported if e.startswith("study_id")][-1]  # not the events export
    rows = list(csv.DictReader(io.StringIO(audit_export)))
    assert len(rows) == 1 and rows[0]["file_type"] == "dicom" and "Cortex intact" in rows[0]["feedback"]

    engine.dispose()
    db_dir = Path(app_env["FRACTURESCAN_DB_URL"].removeprefix("sqlite:///")).parent
    db_files = sorted(db_dir.glob("app.db*"))
    assert any(p.name == "app.db-wal" for p in db_files)
    for path in db_files:
        assert not _leaks(path.read_bytes()), path.name
    assert exported and not any(_leaks(e) for e in exported), "the exported CSVs"
    log_text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records and not _leaks(log_text), "the log"
    out, err = capfd.readouterr()
    assert not _leaks(out) and not _leaks(err), "stdout/stderr"
    assert not _leaks("\n".join(str(w.message) for w in caught)), "warnings"
    # Independent of SQLAlchemy: every text value in every table is clean.
    with sqlite3.connect(db_dir / "app.db") as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608 (names from the schema)
                assert not _leaks(repr(row)), table


# --------------------------------------------------------------------------- login timing

class _CountingHasher:
    """Wraps the real argon2 hasher and records which hashes ``verify`` was asked to check."""

    def __init__(self, real) -> None:
        self.real, self.verified = real, []

    def verify(self, stored: str, password: str) -> bool:
        self.verified.append(stored)
        return self.real.verify(stored, password)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def _stored_hash(engine, username: str) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT password_hash FROM users WHERE username = :u"),
                            {"u": username}).scalar_one()


def test_unknown_user_costs_one_argon2_verify_like_a_wrong_password(
        engine, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _CountingHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", counting)
    for name in ("nobody-here", "", "drsmith"):
        with pytest.raises(users.AuthenticationError, match="Wrong user name or password"):
            users.authenticate(engine, name, "some-wrong-password")
    doctor_hash = _stored_hash(engine, "drsmith")
    assert counting.verified == [users._DUMMY_HASH, users._DUMMY_HASH, doctor_hash]
    # A disabled account is still verified first, so its refusal takes the same time too.
    users.set_active(engine, "drsmith", False, actor="admin")
    with pytest.raises(users.AuthenticationError, match="disabled"):
        users.authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    assert counting.verified[-1] == doctor_hash and len(counting.verified) == 4


def test_dummy_hash_has_the_same_argon2_cost_as_real_hashes(engine) -> None:
    """Same algorithm, version, memory, time and parallelism: the verify costs the same."""
    params = lambda h: h.split("$")[1:4]  # noqa: E731  (['argon2id', 'v=19', 'm=…,t=…,p=…'])
    assert params(users._DUMMY_HASH) == params(_stored_hash(engine, "drsmith"))
    assert params(users._DUMMY_HASH)[0] == "argon2id"
