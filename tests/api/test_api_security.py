"""Security review findings in the REST API: the key is checked and streamed bytes are counted
before any body is parsed (chunked uploads too), feedback only on one's own analyses, security
headers, no server paths in error bodies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fracturescan.store import users
from fracturescan.store.apikeys import create_key

from .conftest import png_bytes


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(make_client, api_checkpoint: Path):
    return make_client((api_checkpoint,))


def test_feedback_only_by_the_analysis_owner_or_an_admin(client, engine, doctor_key: str) -> None:
    audit_id = client.post("/v1/predict", headers=auth(doctor_key),
                           files=[("files", ("a.png", png_bytes(1), "image/png"))]).json()["audit_id"]
    users.create_user(engine, "drjones", "another-password-1", "doctor", actor="admin")
    other_key = create_key(engine, "drjones", "jones", actor="admin")[1]
    admin_key = create_key(engine, "admin", "admin", actor="admin")[1]
    refused = client.post(f"/v1/studies/{audit_id}/feedback", headers=auth(other_key), json={"agrees": False})
    assert refused.status_code == 403 and "only the doctor who requested it" in refused.json()["error"]
    for key in (doctor_key, admin_key):
        assert client.post(f"/v1/studies/{audit_id}/feedback", headers=auth(key),
                           json={"agrees": True}).status_code == 201


# --------------------------------------------------------------------------- body before key

def _multipart_chunks(total: int, chunk: int = 64 * 1024):
    """A multipart body of about ``total`` bytes, as a chunked client sends it (no length)."""
    boundary = b"xYzBoundary"
    head = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n")
    yield head
    sent = len(head)
    while sent < total:
        yield b"\0" * chunk
        sent += chunk
    yield b"\r\n--" + boundary + b"--\r\n"


def _call(app, headers: dict[str, str], total: int) -> tuple[int, dict, int]:
    """Drive the ASGI app directly with a chunked POST of ``total`` bytes; return (status, JSON
    body, bytes the app pulled from the client)."""
    chunks = _multipart_chunks(total)
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        piece = next(chunks, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in {
        **headers, "content-type": "multipart/form-data; boundary=xYzBoundary",
        "transfer-encoding": "chunked", "host": "testserver"}.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
             "root_path": "", "headers": raw, "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


@pytest.fixture
def small_app(db_url: str, engine, api_checkpoint: Path):
    """The API with a 0.1 MB per-file limit: one request may carry 16 x 0.1 MB + 1 MB framing."""
    from fracturescan.api.app import create_app
    from fracturescan.appconfig import AppConfig

    return create_app(AppConfig(db_url=db_url, model_paths=(api_checkpoint,), max_upload_mb=0.1))


@pytest.mark.parametrize("header", [None, "Bearer fsk_not-a-real-key"])
def test_an_unauthenticated_chunked_upload_is_refused_before_its_body_is_read(small_app, header) -> None:
    status, body, pulled = _call(small_app, {"authorization": header} if header else {}, total=20_000_000)
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert pulled < 100_000  # of 20 MB: at most the first chunk was looked at


def test_an_oversized_chunked_upload_is_cut_off_at_the_limit(small_app, doctor_key: str) -> None:
    limit = 16 * 100_000 + 1_000_000
    status, body, pulled = _call(small_app, auth(doctor_key), total=20_000_000)
    assert status == 413 and "larger than the 3 MB one request may carry" in body["error"]
    assert limit <= pulled < limit + 2 * 64 * 1024  # stopped one chunk past the limit, not at 20 MB


# --------------------------------------------------------------------------- headers, error bodies

def test_every_answer_carries_security_headers(client, doctor_key: str) -> None:
    for response in (client.get("/v1/health"), client.get("/v1/model"),
                     client.get("/v1/model", headers=auth(doctor_key)), client.get("/v1/nothing")):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]


def _tampered_copy(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit pattern in the tensor data: the SHA-256 no longer matches
    weights.write_bytes(bytes(data))
    return target


def test_a_broken_active_model_answers_503_without_server_paths(make_client, engine, doctor_key: str,
                                                                 api_checkpoint: Path, tmp_path: Path) -> None:
    from fracturescan.store import settings

    bad = _tampered_copy(api_checkpoint, tmp_path / "secret-folder" / "tampered")
    settings.set_setting(engine, settings.ACTIVE_MODEL, "tampered", actor="admin")
    client = make_client((bad,))
    response = client.post("/v1/predict", headers=auth(doctor_key),
                           files=[("files", ("a.png", png_bytes(1), "image/png"))])
    assert response.status_code == 503
    error = response.json()["error"]
    assert "could not be loaded" in error and "reference" in error
    assert str(tmp_path) not in response.text and "secret-folder" not in response.text and "/" not in error


# --------------------------------------------------------------------------- model discovery

def test_a_corrupt_run_is_skipped_and_reported_not_fatal(engine, doctor_key: str, api_checkpoint: Path,
                                                         tmp_path: Path, db_url: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import shutil

    from fastapi.testclient import TestClient

    from fracturescan.api.app import create_app
    from fracturescan.appconfig import AppConfig

    runs = tmp_path / "runs"
    _tampered_copy(api_checkpoint, runs / "a_tampered" / "best")  # found first, no admin choice
    shutil.copytree(api_checkpoint, runs / "b_good" / "best")
    caplog.set_level(logging.WARNING, logger="fracturescan")
    app = create_app(AppConfig(db_url=db_url, models_dir=runs), preload=True)  # exited here before
    with TestClient(app) as client:
        health = client.get("/v1/health").json()
        assert health["status"] == "ok" and health["model_id"] == "b_good"
        assert health["unusable_models"] == ["a_tampered"] and str(tmp_path) not in str(health)
        response = client.post("/v1/predict", headers=auth(doctor_key),
                               files=[("files", ("a.png", png_bytes(1), "image/png"))])
        assert response.status_code == 200 and response.json()["model_id"] == "b_good"
    warnings = [r.getMessage() for r in caplog.records if "a_tampered" in r.getMessage()]
    assert len(warnings) == 1 and "SHA-256" in warnings[0]  # reported once, not on every request


def test_discovery_never_renames_folders(make_client, api_checkpoint: Path, tmp_path: Path) -> None:
    """A save interrupted between its two renames leaves run/.best.old-*; only a command that
    works on the run (not a server looking at it) may put it back."""
    import shutil

    from fracturescan.service import discover_models

    runs = tmp_path / "runs"
    shutil.copytree(api_checkpoint, runs / "good" / "best")
    aside = runs / "interrupted" / ".best.old-1234abcd"
    shutil.copytree(api_checkpoint, aside)
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    assert [m.model_id for m in discover_models(runs)] == ["good"]
    client = make_client(models_dir=runs)
    assert client.get("/v1/health").json()["model_id"] == "good"
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before  # nothing renamed


def test_upload_names_never_reach_the_log(make_client, api_checkpoint: Path, doctor_key: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """File names often carry patient names: the log identifies uploads by hash only."""
    import logging

    client = make_client((api_checkpoint,), max_upload_mb=0.01)
    caplog.set_level(logging.DEBUG)
    names = ["DOE^JANE_wrist.png", "DOE^JANE_broken.png", "DOE^JANE_huge.png"]
    files = [("files", (names[0], png_bytes(1), "image/png")), ("files", (names[1], b"not an image", "image/png")),
             ("files", (names[2], png_bytes(2, (200, 200)), "image/png"))]
    assert client.post("/v1/predict", headers=auth(doctor_key), files=files).status_code == 200
    assert client.post("/v1/predict", headers=auth(doctor_key), files=files[1:]).status_code == 422
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records and "DOE" not in logged and "JANE" not in logged
