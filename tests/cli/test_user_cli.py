"""``fracturescan user`` and the first start: the one-time password on the terminal (never in the
log), the database made when the command starts, credentials kept off the command line."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("argon2")

from fracturescan.cli.main import main
from tests.webapp.conftest import cheap_argon2  # noqa: F401  (a fixture)

_OTP = re.compile(r"^    (\S{16})$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _no_admin_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FRACTURESCAN_ADMIN_PASSWORD", "FRACTURESCAN_DB_URL", "FRACTURESCAN_DB_URL_FILE"):
        monkeypatch.delenv(name, raising=False)


def _one_time(text: str) -> str:
    found = _OTP.findall(text)
    assert len(found) == 1, text
    return found[0]


def test_app_command_creates_the_first_admin_before_the_server_and_prints_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from fracturescan.store import users

    (tmp_path / "runs").mkdir()
    db = tmp_path / "app.db"
    launched: list[bool] = []
    # The database and the account must exist by the time Streamlit would start.
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: launched.append(db.is_file()) or 0)
    assert main(["app", "--models", str(tmp_path / "runs"), "--db", f"sqlite:///{db}"]) == 0
    out, err = capfd.readouterr()
    password = _one_time(out)
    assert launched == [True]
    assert "http://127.0.0.1:8501" in out and out.index("http://") < out.index(password)
    assert password not in err  # the log (stderr at INFO for `app`) never carries it
    engine = users.open_store(f"sqlite:///{db}")
    assert users.authenticate(engine, "admin", password).must_change_password
    # A second start prints nothing new: the account exists.
    assert main(["app", "--models", str(tmp_path / "runs"), "--db", f"sqlite:///{db}"]) == 0
    assert not _OTP.findall(capfd.readouterr().out)


@pytest.mark.usefixtures("cheap_argon2")
def test_user_commands_create_admin_list_reset_and_unlock(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from fracturescan.store import users

    url = f"sqlite:///{tmp_path / 'u.db'}"
    assert main(["user", "create-admin", "--db", url]) == 0
    first = _one_time(capfd.readouterr().out)
    assert main(["user", "create-admin", "--db", url]) == 1
    assert "has users already" in capfd.readouterr().err
    engine = users.open_store(url)
    users.create_user(engine, "drsmith", "doctor-password-1", "doctor", actor="test")
    for _ in range(users.MAX_FAILURES):
        with pytest.raises(users.AuthenticationError):
            users.authenticate(engine, "drsmith", "wrong-password!", client="10.0.0.1")
    assert main(["user", "list", "--db", url]) == 0
    listing = capfd.readouterr().out
    assert re.search(r"^drsmith\s+doctor\s+active\s+5\s+no", listing, re.MULTILINE), listing
    assert re.search(r"^admin\s+admin\s+active\s+0\s+yes", listing, re.MULTILINE), listing
    with pytest.raises(users.AuthenticationError, match="Too many"):
        users.authenticate(engine, "drsmith", "doctor-password-1", client="10.0.0.1")
    assert main(["user", "unlock", "drsmith", "--db", url]) == 0
    assert users.authenticate(engine, "drsmith", "doctor-password-1", client="10.0.0.1")
    assert main(["user", "reset-password", "admin", "--db", url]) == 0
    second = _one_time(capfd.readouterr().out)
    assert second != first and users.authenticate(engine, "admin", second).must_change_password
    with pytest.raises(users.AuthenticationError):
        users.authenticate(engine, "admin", first)
    assert main(["user", "unlock", "nobody", "--db", url]) == 1
    assert capfd.readouterr().err.strip() == "error: No user named 'nobody'; `fracturescan user list` shows them."


def test_database_password_comes_from_the_environment_or_a_file_not_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from fracturescan.cli.db_url import resolve_db_url

    secret = "postgresql+psycopg://fs:s3cret@127.0.0.1:1/fracturescan"
    assert main(["user", "list", "--db", secret]) == 1
    err = capfd.readouterr().err
    assert "--db carries a password" in err and "FRACTURESCAN_DB_URL" in err and "s3cret" not in err
    # From the environment it is accepted (and the connection error hides the password).
    monkeypatch.setenv("FRACTURESCAN_DB_URL", secret)
    assert main(["user", "list"]) == 1
    err = capfd.readouterr().err
    assert err.startswith("error: Cannot open the database postgresql+psycopg://fs:***@127.0.0.1:1/")
    assert "s3cret" not in err and "Traceback" not in err
    monkeypatch.delenv("FRACTURESCAN_DB_URL")
    # From a file: its first line.
    url = f"sqlite:///{tmp_path / 'f.db'}"
    (tmp_path / "db-url").write_text(url + "\n")
    monkeypatch.setenv("FRACTURESCAN_DB_URL_FILE", str(tmp_path / "db-url"))
    assert resolve_db_url("sqlite:///fracturescan-app.db") == url  # the option's default
    assert main(["user", "create-admin"]) == 0 and (tmp_path / "f.db").is_file()
    (tmp_path / "db-url").write_text("")
    assert main(["user", "list"]) == 1
    assert "is empty" in capfd.readouterr().err
