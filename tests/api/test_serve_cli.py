"""The CLI around the API: `api-key` commands, and `fracturescan serve` as a real server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fracturescan.cli.main import main

from .conftest import png_bytes


def test_api_key_commands_create_list_and_revoke(db_url: str, engine, capsys: pytest.CaptureFixture) -> None:
    assert main(["api-key", "create", "drsmith", "--name", "PACS bridge", "--db", db_url]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    key = printed[-1]
    from datetime import timedelta

    from fracturescan.store.apikeys import list_keys
    from fracturescan.store.db import utcnow

    [info] = list_keys(engine, "drsmith")
    assert abs(info.expires_at - (utcnow() + timedelta(days=365))) < timedelta(minutes=5)  # the default
    assert f"expires {info.expires_at:%Y-%m-%d}" in printed[0]
    from fracturescan.store.apikeys import authenticate_key

    assert authenticate_key(engine, key).username == "drsmith"
    assert main(["api-key", "list", "--db", db_url]) == 0
    listing = capsys.readouterr().out
    assert "PACS bridge" in listing and key[:12] in listing and key not in listing
    assert main(["api-key", "revoke", "1", "--db", db_url]) == 0
    assert "Revoked API key #1" in capsys.readouterr().out
    assert main(["api-key", "revoke", "42", "--db", db_url]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: No API key with id 42; `fracturescan api-key list` shows them."]


def test_serve_refuses_without_a_model(db_url: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--db", db_url]) == 1
    assert capsys.readouterr().err.strip() == "error: Give --models DIR (a folder of training runs) or --model PATH."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_a_prediction_over_http(tmp_path: Path, db_url: str, doctor_key: str,
                                              api_checkpoint: Path) -> None:
    """A real `fracturescan serve` process: health without a key, a prediction with one."""
    import httpx

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "fracturescan.cli.main", "serve", "--model", str(api_checkpoint.parent),
         "--db", db_url, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"{base}/v1/health", timeout=2)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.stdout.read().decode(errors="replace")) from None
                time.sleep(0.5)
        assert health.json()["status"] == "ok"
        response = httpx.post(f"{base}/v1/predict", headers={"Authorization": f"Bearer {doctor_key}"},
                              files=[("files", ("a.png", png_bytes(7), "image/png"))], timeout=60)
        assert response.status_code == 200, response.text
        assert 0 <= response.json()["study"]["probability"] <= 1
        assert httpx.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"] == "fracturescan API"
        _run_example_client(base, doctor_key, tmp_path)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0].decode(errors="replace")
    assert "Traceback" not in log and doctor_key not in log


def test_serve_starts_despite_a_broken_checkpoint_and_reports_it(
        tmp_path: Path, db_url: str, api_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose weights fail verification is skipped with a warning, never fatal (issue 14):
    the server starts, /v1/health names the run, predictions say there is no model."""
    import shutil

    import uvicorn
    from fastapi.testclient import TestClient

    run = shutil.copytree(api_checkpoint.parent, tmp_path / "run")
    (run / "best" / "model.safetensors").write_bytes(b"tampered")
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(app))  # instead of blocking
    assert main(["serve", "--model", str(run), "--db", db_url]) == 0
    with TestClient(started[0]) as client:
        health = client.get("/v1/health").json()
    assert health["status"] == "no-model" and health["unusable_models"] == ["run"]


def _run_example_client(base: str, key: str, tmp_path: Path) -> None:
    """examples/api_client.py (standard library only) against the same server: a two-view study
    with heatmaps saved, then a refusal with a wrong key."""
    study = tmp_path / "study"
    study.mkdir()
    for seed in (1, 2):
        (study / f"view{seed}.png").write_bytes(png_bytes(seed))
    script = Path(__file__).resolve().parents[2] / "examples" / "api_client.py"
    done = subprocess.run([sys.executable, str(script), base, str(study), "--heatmaps", str(tmp_path / "maps")],
                          env={**os.environ, "FRACTURESCAN_API_KEY": key}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "view1.png: P(abnormal) = " in done.stdout and "study: P(abnormal) = " in done.stdout
    assert "SYNTHETIC" in done.stdout and "not a diagnostic device" in done.stdout.lower()
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["view1_heatmap.png", "view2_heatmap.png"]
    refused = subprocess.run([sys.executable, str(script), base, str(study)],
                             env={**os.environ, "FRACTURESCAN_API_KEY": "fsk_wrong"}, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: 401: Invalid or revoked API key")
    routed = subprocess.run([sys.executable, str(script), base, str(study), "--body-part", "wrist"],
                            env={**os.environ, "FRACTURESCAN_API_KEY": key}, capture_output=True, text=True, timeout=120)
    assert routed.returncode == 0 and "body part: XR_WRIST (model run, chosen by request)" in routed.stdout
    elbow = subprocess.run([sys.executable, str(script), base, str(study), "--body-part", "elbow"],
                           env={**os.environ, "FRACTURESCAN_API_KEY": key}, capture_output=True, text=True, timeout=120)
    assert elbow.returncode == 1 and elbow.stderr.startswith("error: 422: No model covers XR_ELBOW")
