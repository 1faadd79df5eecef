"""The audit log survives a kill -9 of a process in the middle of writing it (SQLite WAL).

A child process appends analyses through the real :func:`record_analysis` in a tight loop and
prints each committed audit id; the test kills it with SIGKILL at a random moment, then checks
the database with the stdlib ``sqlite3`` module (independent of the app's code): it is intact,
every id the child reported is there with all its images, and new writes work.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fracturescan.store import users  # noqa: E402  (after the importorskips in conftest)
from fracturescan.store.audit import ImageRecord, ModelRecord, record_analysis  # noqa: E402
from fracturescan.store.db import make_engine  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

#: The writer: each study has 3 images of 64 KiB pixels, so one commit spans many pages.
WRITER = r"""
import sys
from fracturescan.store import users
from fracturescan.store.audit import ImageRecord, ModelRecord, record_analysis
from fracturescan.store.db import make_engine

engine = make_engine(sys.argv[1])
user = users.get_user(engine, int(sys.argv[2]))
model = ModelRecord("run_x", "sha256:abc", "ab" * 32, synthetic=True)
blob = bytes(range(256)) * 256
print("ready", flush=True)
n = 0
while True:
    n += 1
    images = [ImageRecord(f"{n:060x}{k:04x}", "png", (n % 97) / 97, {"rows": n}, blob)
              for k in range(3)]
    print(record_analysis(engine, user, model, 0.5, images), flush=True)
"""

ROUNDS = 5


def _kill_writer_mid_run(url: str, user_id: int, rng: random.Random) -> list[int]:
    """Run the writer, SIGKILL it after a random delay; return the ids it reported committed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-c", WRITER, url, str(user_id)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n", child.stderr.read() if child.stderr else ""
        first = child.stdout.readline()  # at least one commit before the kill
        assert first.strip().isdigit(), first
        time.sleep(rng.uniform(0.02, 0.4))
        assert child.poll() is None, "the writer stopped by itself"
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # Only complete lines count: a kill may cut the last print short.
    lines = (first + rest).split("\n")[:-1]
    return [int(line) for line in lines]


def test_audit_log_survives_kill_9_of_a_writer(engine, app_env: dict[str, str]) -> None:
    url = app_env["FRACTURESCAN_DB_URL"]
    db_path = Path(url.removeprefix("sqlite:///"))
    doctor = users.authenticate(engine, "drsmith", "doctor-password-123")
    engine.dispose()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    reported: list[int] = []
    for _ in range(ROUNDS):
        reported += _kill_writer_mid_run(url, doctor.id, rng)
        with sqlite3.connect(db_path) as con:  # a fresh connection recovers the WAL
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"seed {seed}"
            stored = {row[0] for row in con.execute("SELECT id FROM audit_studies")}
            missing = sorted(set(reported) - stored)
            assert not missing, f"committed but lost: {missing[:5]} (seed {seed})"
            # A study and its images commit together: never a study with some images missing.
            torn = con.execute(
                "SELECT s.id FROM audit_studies s LEFT JOIN audit_images i ON i.study_id = s.id "
                "GROUP BY s.id HAVING COUNT(i.id) != s.n_images").fetchall()
            assert torn == [], f"partial studies {torn[:5]} (seed {seed})"
        con.close()
    assert len(reported) >= ROUNDS and len(set(reported)) == len(reported)

    # The app can keep writing after the crashes, and the append-only protection still holds.
    engine = make_engine(url)
    model = ModelRecord("run_x", "sha256:abc", "ab" * 32, synthetic=True)
    new_id = record_analysis(engine, doctor, model, 0.5, [ImageRecord("e" * 64, "png", 0.9)])
    assert new_id > max(reported)
    with pytest.raises(Exception, match="append-only"):
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM audit_studies")
    engine.dispose()
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT n_images FROM audit_studies WHERE id = ?", (new_id,)).fetchone() == (1,)
    con.close()
