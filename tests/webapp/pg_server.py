"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, listen on a Unix
socket only, stop and delete at the end. Skips when PostgreSQL's programs are not installed
(``.ci/run`` installs Debian's ``postgresql``)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian keeps initdb off PATH
    return found[-1] if found else shutil.which(name)


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as the ``postgres`` account then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def postgres_server() -> Iterator[str]:
    """Yield an SQLAlchemy URL of a fresh, empty database (psycopg driver)."""
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="fs-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    try:
        subprocess.run(_as_owner([initdb, "-D", str(data), "-U", "fracturescan", "-A", "trust", "-E", "UTF8",
                                  "--no-sync"]), check=True, capture_output=True, timeout=120)
        url = f"postgresql+psycopg://fracturescan@/postgres?host={root}&port=5432"
        start_server(url)
        yield url
    finally:
        subprocess.run(_as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def new_database(server_url: str) -> str:
    """Create a new empty database on the server at ``server_url``; return its URL."""
    import uuid

    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.replace("/postgres?", f"/{name}?")


def _root(url: str) -> Path:
    """The server's folder (its socket directory) from a URL that :func:`postgres_server` made."""
    return Path(url.split("host=")[1].split("&")[0])


def start_server(url: str) -> None:
    """Start (or, after a crash, restart with recovery) the server of ``url``."""
    root = _root(url)
    options = f"-k {root} -c listen_addresses='' -c fsync=off -p 5432"
    subprocess.run(_as_owner([_bin("pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-o",
                              options, "-w", "start"]), check=True, capture_output=True, timeout=120)


def kill_server(url: str) -> int:
    """SIGKILL the server's postmaster, as a crash would; returns its pid."""
    import signal

    pid = int((_root(url) / "data" / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    return pid
