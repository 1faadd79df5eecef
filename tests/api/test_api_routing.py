"""The API routes each study to its body part's model (two small models on wrist + finger phantoms)."""

from __future__ import annotations

import numpy as np
import pytest

from fracturescan.store import settings
from tests.conftest import RoutedModels
from tests.routing_helpers import as_dicom, as_png, phantom_study

pytest.importorskip("pydicom")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files(uploads: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in uploads]


@pytest.fixture
def client(make_client, routed_models: RoutedModels):
    return make_client(models_dir=routed_models.models)


def test_predict_routes_to_the_part_model_and_matches_its_predictor(client, engine, doctor_key: str,
                                                                   routed_models: RoutedModels) -> None:
    from fracturescan.inference import Predictor

    views = phantom_study(routed_models.data, "XR_FINGER")
    uploads = [as_dicom(p, "FINGER") for p in views]
    settings.set_setting(engine, settings.part_model_key("XR_FINGER"), "finger", actor="admin")
    response = client.post("/v1/predict", headers=auth(doctor_key), files=files(uploads))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_id"], body["body_part"], body["body_part_source"]) == ("finger", "XR_FINGER", "dicom")
    finger = Predictor.from_checkpoint(routed_models.models / "finger")
    expected = [finger.predict_image(data, name=name) for name, data in uploads]
    np.testing.assert_allclose([i["probability"] for i in body["images"]], expected, rtol=1e-5, atol=1e-6)
    assert body["model_sha256"] == finger.metadata.sha256

    wrist = [as_png(p) for p in phantom_study(routed_models.data, "XR_WRIST")]
    body = client.post("/v1/predict?body_part=wrist", headers=auth(doctor_key), files=files(wrist)).json()
    assert (body["model_id"], body["body_part"], body["body_part_source"]) == ("both", "XR_WRIST", "request")
    info = client.get("/v1/model?body_part=XR_FINGER", headers=auth(doctor_key)).json()
    assert info["model_id"] == "finger" and info["body_parts"] == ["XR_FINGER"]
    parts = {p["body_part"]: p["model_id"] for p in client.get("/v1/body-parts", headers=auth(doctor_key)).json()["parts"]}
    assert parts == {"XR_ELBOW": None, "XR_FINGER": "finger", "XR_FOREARM": None, "XR_HAND": None,
                     "XR_HUMERUS": None, "XR_SHOULDER": None, "XR_WRIST": "both"}


@pytest.mark.parametrize("case, needle", [
    ("mixed", "Mixed body parts in one study"),
    ("uncovered", "No model covers XR_ELBOW"),
    ("contradiction", "The DICOM header says FINGER but XR_WRIST was chosen"),
])
def test_unroutable_studies_are_422_with_one_line_and_not_audited(client, engine, doctor_key: str,
                                                                  routed_models: RoutedModels,
                                                                  case: str, needle: str) -> None:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from fracturescan.store.db import AuditStudy

    wrist = phantom_study(routed_models.data, "XR_WRIST")[0]
    finger = phantom_study(routed_models.data, "XR_FINGER")[0]
    uploads, query = {
        "mixed": ([as_dicom(wrist, "WRIST"), as_dicom(finger, "FINGER")], ""),
        "uncovered": ([as_png(wrist)], "?body_part=XR_ELBOW"),
        "contradiction": ([as_dicom(finger, "FINGER")], "?body_part=XR_WRIST"),
    }[case]
    response = client.post(f"/v1/predict{query}", headers=auth(doctor_key), files=files(uploads))
    assert response.status_code == 422
    error = response.json()["error"]
    assert needle in error and "\n" not in error
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(AuditStudy)) == 0
    if case == "uncovered":
        response = client.get("/v1/model?body_part=elbow", headers=auth(doctor_key))
        assert response.status_code == 422 and "No model covers XR_ELBOW" in response.json()["error"]
