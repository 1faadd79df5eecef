"""``fracturescan db backup`` and ``restore`` while analyses are being written: every audit row
committed before the backup started is in the restored database, no analysis is there by
halves, and the restored database works (schema current, audit tables still append-only);
on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
pytest.importorskip("argon2")

from sqlalchemy import text  # noqa: E402

from fracturescan.cli.main import main  # noqa: E402
from fracturescan.store import users  # noqa: E402
from fracturescan.store.audit import ImageRecord, ModelRecord, record_analysis  # noqa: E402
from fracturescan.store.backup import BackupError, backup, restore  # noqa: E402
from fracturescan.store.db import connect, make_engine  # noqa: E402

from ..webapp.pg_server import new_database, postgres_server  # noqa: E402

MODEL = ModelRecord("run_a", "sha256:abc (today)", "a" * 64, True)


class Writer(threading.Thread):
    """Records analyses of 1-3 images back to back; ``committed`` lists each id once its
    transaction has returned."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.user = users.create_user(self.engine, "drsmith", "doctor-password-123", "doctor", actor="test")
        self.committed: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                images = [ImageRecord(f"{n:064x}", "png", (n % 7) / 7) for _ in range(1 + n % 3)]
                self.committed.append(record_analysis(self.engine, self.user, MODEL, 0.5, images))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.committed) < count and time.monotonic() < deadline and self.error is None:
            time.sleep(0.01)
        assert self.error is None and len(self.committed) >= count


def _audit(url: str) -> tuple[dict[int, int], dict[int, list[int]]]:
    """{study id: n_images} and {study id: positions of its image rows} in the database at ``url``."""
    engine = connect(url)
    try:
        with engine.connect() as conn:
            studies = dict(conn.execute(text("SELECT id, n_images FROM audit_studies")).all())
            images: dict[int, list[int]] = {}
            for study, position in conn.execute(text("SELECT study_id, position FROM audit_images ORDER BY id")):
                images.setdefault(study, []).append(position)
    finally:
        engine.dispose()
    return studies, images


def _backup_while_writing_then_restore(source: str, target: str, file: Path) -> None:
    from fracturescan.store.health import check_database

    writer = Writer(source)
    writer.start()
    try:
        writer.wait_for(15)
        committed_before = list(writer.committed)
        result = backup(source, file)
        writer.wait_for(len(committed_before) + 10)  # the writer kept going during the backup
    finally:
        writer.stop.set()
        writer.join(timeout=30)
        writer.engine.dispose()
    assert writer.error is None
    assert result.path == file and file.stat().st_size == result.size_bytes > 0
    restore(file, target)
    studies, images = _audit(target)
    assert set(committed_before) <= set(studies)  # every row committed before the backup
    assert set(studies) <= set(writer.committed)  # nothing that was never committed
    for study, n_images in studies.items():  # no analysis by halves
        assert images[study] == list(range(n_images))
    if result.rows:  # SQLite reports the counts it found in the copy
        assert result.rows["audit_studies"] == len(studies)
    engine = make_engine(target)  # the restored database is at the current schema
    status = check_database(engine)
    engine.dispose()
    assert status.writable and status.refuses_changes and not status.unprotected


def test_sqlite_backup_while_writing_and_restore(tmp_path: Path) -> None:
    _backup_while_writing_then_restore(f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'restored.db'}",
                                       tmp_path / "backups" / "one.sqlite")


def test_backup_and_restore_never_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    make_engine(url).dispose()
    file = tmp_path / "b.sqlite"
    assert main(["db", "backup", str(file), "--db", url]) == 0
    assert f"Backed up to {file}" in capsys.readouterr().out
    assert main(["db", "backup", str(file), "--db", url]) == 1
    assert capsys.readouterr().err.strip() == f"error: {file} exists; choose a new file name (backups are never overwritten)."
    assert main(["db", "restore", str(file), "--db", url]) == 1
    assert "exists; restore into a new file" in capsys.readouterr().err
    with pytest.raises(BackupError, match="No database file"):
        backup(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "c.sqlite")
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "c.sqlite").exists()


@pytest.fixture(scope="module")
def pg_server():
    yield from postgres_server()


def test_postgresql_backup_while_writing_and_restore(pg_server: str, tmp_path: Path) -> None:
    target = new_database(pg_server)
    _backup_while_writing_then_restore(new_database(pg_server), target, tmp_path / "pg.dump")
    with pytest.raises(BackupError, match="is not empty"):
        restore(tmp_path / "pg.dump", target)
