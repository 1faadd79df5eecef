"""The REST API through FastAPI's TestClient: keys, model info, prediction, errors, feedback."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from fracturescan.store import settings, users
from fracturescan.store.apikeys import create_key
from fracturescan.store.db import AuditImage, AuditStudy, Event, Feedback

from ..real_samples import tibia
from ..tolerances import assert_within, predictor_probability_bound, sum_bound
from .conftest import png_bytes


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def pngs(*seeds: int, size: tuple[int, int] = (80, 64)) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"view{s}.png", png_bytes(s, size), "image/png")) for s in seeds]


@pytest.fixture
def client(make_client, api_checkpoint: Path):
    return make_client((api_checkpoint,))


def test_health_needs_no_key_and_names_the_model(client) -> None:
    body = client.get("/v1/health").json()
    assert body["status"] == "ok" and body["model_id"] == "run"


@pytest.mark.parametrize("header", [None, "Bearer fsk_not-a-real-key", "Basic ZHI6cHc="])
def test_requests_without_a_valid_key_are_refused(client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for response in (client.get("/v1/model", headers=headers),
                     client.post("/v1/predict", headers=headers, files=pngs(1))):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["error"]


def test_model_info_follows_the_admins_threshold(client, engine, doctor_key: str, api_checkpoint: Path) -> None:
    from fracturescan.models.checkpoint import read_metadata

    info = client.get("/v1/model", headers=auth(doctor_key)).json()
    meta = read_metadata(api_checkpoint)
    assert info["sha256"] == meta.sha256 and info["threshold"] == meta.threshold == 0.5
    assert info["synthetic"] is True and any("SYNTHETIC" in w for w in info["warnings"])
    assert info["heatmap_method"] == "grad-cam" and info["localisation"] is None
    settings.set_setting(engine, settings.threshold_key(meta.sha256), 0.73, actor="admin")
    assert client.get("/v1/model", headers=auth(doctor_key)).json()["threshold"] == 0.73


def test_predict_matches_the_predictor_and_is_audited(client, engine, doctor_key: str, api_checkpoint: Path) -> None:
    """Probabilities equal an independent Predictor run on the same bytes; the study is their
    mean; the decision uses the admin's threshold; the audit row carries the key's owner."""
    from fracturescan.inference import Predictor

    predictor = Predictor.from_checkpoint(api_checkpoint)
    expected = [predictor.predict_image(png_bytes(s), name=f"view{s}.png") for s in (1, 2)]
    threshold = float(np.mean(expected))  # a threshold between the two images
    settings.set_setting(engine, settings.threshold_key(predictor.metadata.sha256), threshold, actor="admin")
    response = client.post("/v1/predict", headers=auth(doctor_key), files=pngs(1, 2))
    assert response.status_code == 200, response.text
    body = response.json()
    got = [image["probability"] for image in body["images"]]
    # One request of two images against one image at a time: other kernels, other rounding.
    bound = predictor_probability_bound(predictor, [png_bytes(s) for s in (1, 2)])
    assert_within(got, expected, bound, "API vs Predictor")
    assert [image["abnormal"] for image in body["images"]] == [p >= threshold for p in got]
    assert_within(body["study"]["probability"], np.mean(got), sum_bound(sum(got) / 2, n=2, extra_ops=1))
    assert body["study"]["n_images"] == 2 and body["threshold"] == pytest.approx(threshold)
    assert body["synthetic"] is True and "SYNTHETIC" in " ".join(body["warnings"])
    assert "not a diagnostic device" in body["disclaimer"].lower()
    assert all(image["heatmap_png"] is None for image in body["images"])  # only on request
    with Session(engine) as session:
        study = session.get(AuditStudy, body["audit_id"])
        images = session.scalars(select(AuditImage).where(AuditImage.study_id == study.id)
                                 .order_by(AuditImage.position)).all()
    assert study.username == "drsmith" and study.model_sha256 == body["model_sha256"]
    with Session(engine) as session:  # the events say which key made it, by prefix only
        details = [e.detail for e in session.scalars(select(Event).where(Event.action == "api_prediction"))]
    assert details == [f"audit #{body['audit_id']} with API key {doctor_key[:12]}…"]
    assert [i.sha256 for i in images] == [image["sha256"] for image in body["images"]]
    np.testing.assert_allclose([i.probability for i in images], got, rtol=1e-6)


def test_heatmaps_on_request_are_pngs_of_the_image_with_their_caption(client, doctor_key: str) -> None:
    response = client.post("/v1/predict?heatmaps=true", headers=auth(doctor_key),
                           files=pngs(3, size=(1600, 1200)))
    body = response.json()
    [image] = body["images"]
    overlay = Image.open(io.BytesIO(base64.b64decode(image["heatmap_png"])))
    assert overlay.format == "PNG" and overlay.mode == "RGB"
    # 1600x1200 shown at 768x576, above a black caption strip with white text.
    width, height = overlay.size
    assert width == 768 and height > 576
    strip = np.asarray(overlay)[577:]
    assert (strip.max(axis=-1) < 40).mean() > 0.7 and (strip.min(axis=-1) > 200).any()
    assert image["heatmap_method"] == "grad-cam"
    assert "explanation aid" in body["heatmap_caption"] and "not a diagnosis" in body["heatmap_caption"]


def test_a_bad_file_is_reported_and_the_rest_is_scored(client, doctor_key: str) -> None:
    files = pngs(1) + [("files", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
                       ("files", ("notes.txt", b"hello", "text/plain"))]
    body = client.post("/v1/predict", headers=auth(doctor_key), files=files).json()
    ok, broken, text = body["images"]
    assert ok["probability"] is not None and ok["error"] is None
    assert broken["probability"] is None and "broken.png" in broken["error"]
    assert text["probability"] is None and text["error"]
    assert body["study"]["n_images"] == 1 and body["study"]["probability"] == pytest.approx(ok["probability"])


def test_nothing_readable_is_a_422_naming_each_file(client, engine, doctor_key: str) -> None:
    files = [("files", ("a.png", b"garbage", "image/png")), ("files", ("b.dcm", b"DICM?", "application/dicom"))]
    response = client.post("/v1/predict", headers=auth(doctor_key), files=files)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("None of the 2 file(s) could be analysed") and "a.png:" in error and "b.dcm:" in error
    with Session(engine) as session:
        assert session.scalars(select(AuditStudy)).all() == []  # nothing audited


def test_no_files_or_too_many_files_are_clear_errors(client, doctor_key: str) -> None:
    response = client.post("/v1/predict", headers=auth(doctor_key))
    assert response.status_code == 422 and "files" in response.json()["error"]
    from fracturescan.api.app import MAX_FILES

    response = client.post("/v1/predict", headers=auth(doctor_key), files=pngs(*range(MAX_FILES + 1)))
    assert response.status_code == 413 and f"at most {MAX_FILES}" in response.json()["error"]


def test_oversized_files_are_refused_per_file_and_by_declared_length(make_client, api_checkpoint: Path,
                                                                       doctor_key: str) -> None:
    client = make_client((api_checkpoint,), max_upload_mb=0.01)  # 10 kB per file
    big = png_bytes(4, (400, 400))
    assert len(big) > 10_000
    body = client.post("/v1/predict", headers=auth(doctor_key),
                       files=pngs(1) + [("files", ("big.png", big, "image/png"))]).json()
    assert body["images"][1]["file_type"] == "too large" and "limit" in body["images"][1]["error"]
    assert body["images"][0]["probability"] is not None
    headers = {**auth(doctor_key), "Content-Length": str(10**9), "Content-Type": "multipart/form-data; boundary=x"}
    response = client.post("/v1/predict", headers=headers, content=b"--x--")
    assert response.status_code == 413 and "more than the" in response.json()["error"]


def test_dicom_is_scored_and_identifying_tags_never_leave(client, doctor_key: str) -> None:
    pydicom = pytest.importorskip("pydicom")
    path = tibia()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    identifying = [str(ds.get(k)) for k in ("PatientName", "PatientID", "InstitutionName") if ds.get(k)]
    assert identifying
    response = client.post("/v1/predict?heatmaps=true", headers=auth(doctor_key),
                           files=[("files", ("xray.dcm", path.read_bytes(), "application/dicom"))])
    assert response.status_code == 200, response.text
    [image] = response.json()["images"]
    assert image["file_type"] == "dicom" and 0 <= image["probability"] <= 1 and image["dicom"]
    for value in identifying:
        assert value not in response.text


def test_feedback_is_recorded_against_the_analysis(client, engine, doctor_key: str) -> None:
    audit_id = client.post("/v1/predict", headers=auth(doctor_key), files=pngs(1)).json()["audit_id"]
    response = client.post(f"/v1/studies/{audit_id}/feedback", headers=auth(doctor_key),
                           json={"agrees": False, "note": "callus, old fracture"})
    assert response.status_code == 201
    with Session(engine) as session:
        row = session.get(Feedback, response.json()["feedback_id"])
    assert (row.study_id, row.username, row.agrees, row.note) == (audit_id, "drsmith", False, "callus, old fracture")
    missing = client.post("/v1/studies/999999/feedback", headers=auth(doctor_key), json={"agrees": True})
    assert missing.status_code == 404 and "audit_id" in missing.json()["error"]
    invalid = client.post(f"/v1/studies/{audit_id}/feedback", headers=auth(doctor_key), json={"note": "x"})
    assert invalid.status_code == 422 and "agrees" in invalid.json()["error"]
    for bad_id in ("0", "-3", str(2**70)):  # 2**70 once overflowed SQLite's INTEGER: a 500 (found by schemathesis)
        out_of_range = client.post(f"/v1/studies/{bad_id}/feedback", headers=auth(doctor_key), json={"agrees": True})
        assert out_of_range.status_code == 422 and "audit_id" in out_of_range.json()["error"]


def test_disabling_the_owner_stops_the_key_on_the_next_request(client, engine, doctor_key: str) -> None:
    assert client.get("/v1/model", headers=auth(doctor_key)).status_code == 200
    users.set_active(engine, "drsmith", False, actor="admin")
    response = client.get("/v1/model", headers=auth(doctor_key))
    assert response.status_code == 401 and "disabled" in response.json()["error"]


def test_without_a_model_the_api_says_so(make_client, doctor_key: str) -> None:
    client = make_client(())
    assert client.get("/v1/health").json()["status"] == "no-model"
    response = client.post("/v1/predict", headers=auth(doctor_key), files=pngs(1))
    assert response.status_code == 503 and "--models" in response.json()["error"]


def test_an_unexpected_failure_is_a_500_with_a_reference_and_no_details(client, doctor_key: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import fracturescan.api.app as api_app

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(api_app, "analyse_and_record", boom)
    response = client.post("/v1/predict", headers=auth(doctor_key), files=pngs(1))
    assert response.status_code == 500
    error = response.json()["error"]
    assert "reference" in error and "secret" not in error and "Traceback" not in response.text


def test_an_admins_key_works_like_a_doctors(client, engine) -> None:
    _, key = create_key(engine, "admin", "ops", actor="admin")
    assert client.post("/v1/predict", headers=auth(key), files=pngs(1)).status_code == 200


def test_model_work_runs_on_one_dedicated_thread_and_decoding_elsewhere(
        client, doctor_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scoring happens on the model thread, whichever request thread asked (torch on a
    CPU slows down once several threads have run it; see service.on_model_thread); decoding
    does not, so one slow file cannot stall every other request behind it."""
    import threading

    from fracturescan import service

    scored: list[str] = []
    decoded: list[str] = []
    real_score, real_read = service.score_one, service.read_image

    def scoring(*args, **kwargs):
        scored.append(threading.current_thread().name)
        return real_score(*args, **kwargs)

    def reading(*args, **kwargs):
        decoded.append(threading.current_thread().name)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(service, "score_one", scoring)
    monkeypatch.setattr(service, "read_image", reading)
    for seed in range(3):
        assert client.post("/v1/predict", headers=auth(doctor_key), files=pngs(seed)).status_code == 200
    assert len(scored) == 3 and len(set(scored)) == 1 and scored[0].startswith("fracturescan-model")
    assert len(decoded) == 3 and not any(name.startswith("fracturescan-model") for name in decoded)
    assert threading.current_thread().name not in scored

def test_framework_errors_have_the_same_error_shape(client, doctor_key: str) -> None:
    """Malformed JSON, unknown paths and wrong methods answer {"error": ...} like the rest."""
    malformed = client.post("/v1/studies/1/feedback", headers={**auth(doctor_key), "Content-Type": "application/json"},
                            content=b"\xf06{")
    assert malformed.status_code == 400 and set(malformed.json()) == {"error"}
    unknown = client.get("/v1/nothing-here")
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    wrong_method = client.get("/v1/predict", headers=auth(doctor_key))
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}
