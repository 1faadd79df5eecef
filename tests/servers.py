"""Start real server processes for tests: a free loopback port, a process group that is ended as
a whole, and a wait until the server answers."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 90,
                  context: ssl.SSLContext | None = None) -> None:
    """Poll ``url`` until it answers with any HTTP status; fail with the log's tail if the
    process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[:4]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running(command: list[str], log: Path, env: dict[str, str] | None = None,
            ready_url: str | None = None, context: ssl.SSLContext | None = None,
            timeout: float = 90) -> Iterator[subprocess.Popen]:
    """Run ``command`` in its own process group (output to ``log``) until the block ends; with
    ``ready_url``, wait for it to answer first. Ends the group it started, nothing else."""
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        if ready_url is not None:
            wait_until_up(ready_url, process, log, timeout, context)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
