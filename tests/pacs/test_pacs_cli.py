"""``fracturescan dicom-node`` as a user starts it (a real process), ``pacs study-key``, and the
one-line errors of bad options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")

from tests.pacs.netkit import echo, send, small_cr  # noqa: E402
from tests.pacs.orthanc import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_dicom_node_command_serves_and_study_key_finds_its_audit_event(pacs_checkpoint: Path, tmp_path: Path,
                                                                      capsys) -> None:
    from fracturescan.cli.main import main

    port, storage, db = free_port(), tmp_path / "node", f"sqlite:///{tmp_path / 'audit.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "FRACTURESCAN_ADMIN_PASSWORD": "admin-password-123"}
    process = subprocess.Popen([sys.executable, "-m", "fracturescan.cli.main", "dicom-node", "--model",
                                str(pacs_checkpoint), "--port", str(port), "--storage", str(storage), "--db", db,
                                "--quiet-seconds", "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=ROOT)
    try:
        ready = process.stdout.readline()
        assert f"FRACTURESCAN@127.0.0.1:{port} ready" in ready, process.stderr.read()
        assert echo(port) == 0
        study = "1.2.826.0.1.3680043.8.498.7001"
        assert send(port, [small_cr(study, 1)]) == [0]
        deadline = time.monotonic() + 60
        while not list((storage / "results").rglob("SR_*.dcm")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((storage / "results").rglob("SR_*.dcm"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert main(["pacs", "study-key", "--study", study, "--key-file", str(storage / "study.key"), "--db", db]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("study:") and len(lines) == 2
    assert "dicom_analysis" in lines[1] and "1 image(s) analysed" in lines[1]


@pytest.mark.parametrize("args, message", [
    (["dicom-node", "--model", "x", "--send-to", "not-an-address"], "is not AET@host:port"),
    (["dicom-node"], "Give --models DIR"),
    (["pacs", "analyse", "--url", "http://127.0.0.1:9/dicom-web", "--model", "x"], "Give --study UID"),
    (["pacs", "analyse", "--url", "http://127.0.0.1:9/dicom-web", "--model", "x", "--since", "2026-11-01"],
     "is not a date as YYYYMMDD"),
])
def test_bad_options_are_one_line(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    from fracturescan.cli.main import main

    assert main(args + ["--storage", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
