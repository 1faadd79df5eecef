"""Property test of the REST API: whatever a client sends, the answer is a documented status
with a JSON body, either a result or ``{"error": ...}``, never a 500 or a traceback.

Inputs mix valid seeds (PNG, JPEG, DICOM) with mutated and random bytes, odd file names and
content types, query values and authorisation headers (hypothesis; 60 examples, a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("pydicom")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.reliability.bad_inputs import seed_dicom, seed_jpeg, seed_png  # noqa: E402

SEEDS = [seed_png(), seed_jpeg(), seed_dicom()]
ALLOWED = {200, 400, 401, 413, 422}


@st.composite
def file_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["seed", "mutated", "truncated", "random", "empty", "oversized"]))
    seed = draw(st.sampled_from(SEEDS))
    if kind == "seed":
        return seed
    if kind == "mutated":
        data = bytearray(seed)
        for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                             min_size=1, max_size=12)):
            data[position] = value
        return bytes(data)
    if kind == "truncated":
        return seed[: draw(st.integers(0, len(seed) - 1))]
    if kind == "oversized":  # over the fixture's 50 kB per-file limit
        return seed + bytes(60_000)
    return b"" if kind == "empty" else draw(st.binary(max_size=2048))


upload = st.tuples(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n\""), max_size=40)
    .map(lambda s: s or "x"),
    file_bytes(),
    st.sampled_from(["image/png", "image/jpeg", "application/dicom", "application/octet-stream", "text/plain"]),
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory, api_checkpoint: Path):
    """One app for all examples (the database grows; that is part of the test)."""
    from fastapi.testclient import TestClient

    from fracturescan.api.app import create_app
    from fracturescan.store import users
    from fracturescan.store.apikeys import create_key
    from fracturescan.appconfig import AppConfig

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'api.db'}"
    engine = users.open_store(url)  # no admin needed here (nor created without FRACTURESCAN_ADMIN_PASSWORD)
    users.create_user(engine, "fuzzer", "fuzzer-password-123", "doctor", actor="test")
    key = create_key(engine, "fuzzer", "fuzz", actor="test")[1]
    app = create_app(AppConfig(db_url=url, model_paths=(api_checkpoint.parent,), max_upload_mb=0.05))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, key


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(files=st.lists(upload, min_size=0, max_size=4),
       heatmaps=st.sampled_from(["true", "false", "1", "yes", "maybe", ""]),
       auth=st.sampled_from(["good", "good", "good", "none", "garbage", "basic"]))
def test_any_request_gets_a_documented_json_answer(fuzz_client, files, heatmaps: str, auth: str) -> None:
    client, key = fuzz_client
    headers = {"good": {"Authorization": f"Bearer {key}"}, "none": {},
               "garbage": {"Authorization": "Bearer fsk_" + "!" * 300}, "basic": {"Authorization": "Basic Zm9vOmJhcg=="}}[auth]
    response = client.post(f"/v1/predict?heatmaps={heatmaps}", headers=headers,
                           files=[("files", f) for f in files] or None)
    hypothesis.event(f"status {response.status_code}")  # `pytest --hypothesis-show-statistics` lists them
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    body = response.json()
    assert "Traceback" not in response.text
    if response.status_code == 200:
        assert auth == "good" and body["study"]["n_images"] >= 1
        assert all((img["probability"] is None) == (img["error"] is not None) for img in body["images"])
    else:
        assert set(body) == {"error"} and body["error"]
