"""``fracturescan doctor``: each check finds what is really there (a real SQLite database, real
listening sockets, real checkpoint files), and a probe leaves the database as it was."""

from __future__ import annotations

import shutil
import socket
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from fracturescan.cli.main import main  # noqa: E402
from fracturescan.doctor import FAIL, OK, WARN, _listening_addresses, check_bind, check_disk, run_checks  # noqa: E402

from ..webapp.conftest import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doctor_models")
    make_checkpoint(root / "run_a" / "best")
    return root


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    from fracturescan.store.db import make_engine

    url = f"sqlite:///{tmp_path / 'app.db'}"
    make_engine(url).dispose()
    return url


@pytest.fixture
def listener():
    """A socket listening on 127.0.0.1; yields 'HOST:PORT'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _by_name(checks) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in checks}


def _events(db_url: str) -> int:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def test_a_sound_installation_passes_and_the_probe_leaves_no_row(db_url: str, models: Path, listener: str) -> None:
    before = _events(db_url)
    checks = _by_name(run_checks(db_url, models, binds={"api": listener}, min_free_gb=0.001))
    assert checks["bind api"][0] == OK and "127.0.0.1 only" in checks["bind api"][1]
    assert checks["TLS in front"][0] == WARN  # no --url: cannot tell
    assert checks["database"] == (OK, checks["database"][1]) and "writable" in checks["database"][1]
    assert checks["append-only triggers"][0] == OK
    assert checks["schema"] == (OK, "revision 0003 (current)")
    assert checks["model run_a"][0] == OK and "SYNTHETIC" in checks["model run_a"][1]
    assert checks["disk space"][0] == OK
    assert _events(db_url) == before


def test_listening_addresses_read_from_proc_match_real_sockets() -> None:
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("needs Linux /proc/net/tcp")
    with socket.socket() as wide:
        wide.bind(("0.0.0.0", 0))
        wide.listen()
        port = wide.getsockname()[1]
        assert _listening_addresses(port) == ["0.0.0.0"]
        check = check_bind("app", f"127.0.0.1:{port}")
        assert check.status == FAIL and "0.0.0.0" in check.detail and "--host 127.0.0.1" in check.detail
    assert check_bind("app", f"127.0.0.1:{port}").status == WARN  # closed now: nothing listening


def test_missing_or_defused_trigger_fails(db_url: str, models: Path) -> None:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute("DROP TRIGGER audit_images_no_replace")
        # A trigger of the right name and kind that refuses nothing does not count either.
        conn.execute("DROP TRIGGER feedback_no_update")
        conn.execute("CREATE TRIGGER feedback_no_update BEFORE UPDATE ON feedback BEGIN SELECT 1; END")
    status, detail = _by_name(run_checks(db_url, models))["append-only triggers"]
    assert status == FAIL and "events: DELETE" in detail and "feedback: UPDATE" in detail
    assert "audit_images: REPLACE" in detail
    assert "audit_studies" not in detail


def test_read_only_database_is_not_writable(db_url: str, models: Path) -> None:
    path = db_url.removeprefix("sqlite:///")
    status, detail = _by_name(run_checks(f"sqlite:///file:{path}?mode=ro&uri=true", models))["database"]
    assert status == FAIL and "NOT writable" in detail


def test_absent_or_unreachable_database(tmp_path: Path, models: Path) -> None:
    missing = tmp_path / "nothing.db"
    status, detail = _by_name(run_checks(f"sqlite:///{missing}", models))["database"]
    assert status == FAIL and "no database file" in detail and not missing.exists()  # not created
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://fracturescan@/x?host={tmp_path / 'no-socket-here'}"
    status, detail = _by_name(run_checks(url, models))["database"]
    assert status == FAIL and "cannot connect" in detail and "\n" not in detail


def test_tampered_model_is_named(tmp_path: Path, models: Path, db_url: str) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    make_checkpoint(copy / "run_b")
    weights = copy / "run_b" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    checks = _by_name(run_checks(db_url, copy))
    assert checks["model run_a"][0] == OK
    assert checks["model run_b"][0] == FAIL and "does not match" in checks["model run_b"][1]


def test_disk_space_against_the_threshold(tmp_path: Path) -> None:
    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    [check] = check_disk([tmp_path], min_free_gb=free_gb / 2)
    assert check.status == OK and f"{free_gb:.1f} GB free" in check.detail
    assert check_disk([tmp_path], min_free_gb=free_gb * 2)[0].status == WARN
    assert check_disk([tmp_path / "not" / "yet"], min_free_gb=free_gb * 10)[0].status == FAIL


def test_cli_exit_code_follows_failures(db_url: str, models: Path, listener: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    args = ["doctor", "--db", db_url, "--models", str(models), "--app", listener, "--api", listener,
            "--min-free-gb", "0.001"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "append-only triggers" in out and "FAIL" not in out
    assert main([*args[:2], f"sqlite:///{tmp_path / 'none.db'}", *args[3:]]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and captured.err.strip() == "1 check(s) failed."


def test_outdated_schema_fails(db_url: str, models: Path) -> None:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    status, detail = _by_name(run_checks(db_url, models))["schema"]
    assert status == FAIL and "revision 0001, this fracturescan needs 0003" in detail and "db upgrade" in detail


def test_probe_catches_a_replace_that_overwrites(db_url: str) -> None:
    """Without the BEFORE INSERT guard, INSERT OR REPLACE overwrites an event: the probe sees it."""
    from fracturescan.store.db import connect
    from fracturescan.store.health import check_database

    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER events_no_replace")
    engine = connect(db_url)
    status = check_database(engine)
    engine.dispose()
    assert status.writable and not status.refuses_changes and status.unprotected == {"events": ["REPLACE"]}
