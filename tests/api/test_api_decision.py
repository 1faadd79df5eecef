"""/v1/model and /v1/predict show the checkpoint's decision rule: calibrated probability, the
abnormal/doubt/normal level, input-guard and DICOM-header flags, and what a checkpoint lacks."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from fracturescan.decision import LEVELS
from fracturescan.trust import calibrate_checkpoint

from ..guard_samples import labelled_site
from ..real_samples import hand
from ..webapp.conftest import as_wrist_dicom, make_checkpoint
from .test_api import auth, pngs


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-px resnet18 checkpoint recalibrated on a small labelled site."""
    root = tmp_path_factory.mktemp("decision")
    checkpoint = make_checkpoint(root / "run" / "best")
    calibrate_checkpoint(checkpoint, labelled_site(root / "site", [0, 1] * 15), device="cpu")
    return checkpoint


def _dicom_of_modality(modality: str = "MR") -> bytes:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(io.BytesIO(as_wrist_dicom(hand())))
    ds.Modality = modality
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_model_says_what_an_old_checkpoint_lacks(make_client, api_checkpoint: Path, doctor_key: str) -> None:
    body = make_client((api_checkpoint,)).get("/v1/model", headers=auth(doctor_key)).json()
    assert body["missing"] == ["calibration", "operating points", "input guard"]
    assert body["calibrated"] is False and body["operating_points"] is None and body["input_guard"] is False
    study = make_client((api_checkpoint,)).post("/v1/predict", headers=auth(doctor_key), files=pngs(1)).json()["study"]
    assert study["level"] is None and any(n.startswith("no calibration") for n in study["notes"])


def test_predict_shows_levels_and_leaves_a_non_radiograph_out(make_client, calibrated: Path, doctor_key: str) -> None:
    client = make_client((calibrated,))
    model = client.get("/v1/model", headers=auth(doctor_key)).json()
    assert model["missing"] == [] and model["calibrated"] and model["input_guard"]
    low, high = model["operating_points"]["low"], model["operating_points"]["high"]
    site_view = (calibrated.parent.parent / "site" / "s0" / "v0.png").read_bytes()  # like the site's images
    files = [("files", ("view.png", site_view, "image/png")), ("files", ("mr.dcm", _dicom_of_modality(), "application/dicom"))]
    body = client.post("/v1/predict", headers=auth(doctor_key), files=files).json()
    png, mr = body["images"]
    assert any("Modality is MR" in f for f in mr["flags"]) and not mr["used_in_study"]
    assert mr["probability"] is not None  # scored, shown, but not counted
    study = body["study"]
    assert png["used_in_study"] and png["flags"] == [] and png["level"] in LEVELS, (png["flags"], png["level"], png["used_in_study"])
    assert study["n_images"] == 1 and math.isclose(study["probability"], png["probability"], rel_tol=1e-9)
    expected = "abnormal" if study["probability"] >= high else ("normal" if study["probability"] < low else "doubt")
    assert study["level"] == expected
    assert any("left out of the study probability" in n for n in study["notes"])
    insisted = client.post("/v1/predict?include_flagged=true", headers=auth(doctor_key), files=files).json()
    assert insisted["study"]["n_images"] == 2
    assert math.isclose(insisted["study"]["probability"], (png["probability"] + mr["probability"]) / 2, rel_tol=1e-9)


def test_flagged_images_reach_the_audit_trail_and_the_drift_metric(make_client, calibrated: Path, engine,
                                                                   doctor_key: str) -> None:
    import hashlib
    import json

    from prometheus_client.parser import text_string_to_metric_families
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from fracturescan.monitoring import daily_trend
    from fracturescan.store.apikeys import create_key
    from fracturescan.store.audit import audit_rows
    from fracturescan.store.db import AuditImage

    client = make_client((calibrated,))
    site_view = (calibrated.parent.parent / "site" / "s0" / "v0.png").read_bytes()
    ct = _dicom_of_modality("CT")  # flagged from its header
    answers = []
    for files in ([("files", ("view.png", site_view, "image/png")), ("files", ("ct.dcm", ct, "application/dicom"))],
                  [("files", ("again.png", site_view, "image/png"))]):
        response = client.post("/v1/predict", headers=auth(doctor_key), files=files)
        assert response.status_code == 200, response.text
        answers += response.json()["images"]
    assert any("Modality is CT" in f for f in answers[1]["flags"])
    # The audit rows hold each image's flags as the service answered them, in upload order.
    with Session(engine) as session:
        rows = session.scalars(select(AuditImage).order_by(AuditImage.id)).all()
    assert [json.loads(r.guard_flags) for r in rows] == [a["flags"] for a in answers]
    exported = {row["image_sha256"]: row["image_flags"] for row in audit_rows(engine)}
    assert "Modality is CT" in exported[hashlib.sha256(ct).hexdigest()] and list(exported.values()).count("") == 1
    flagged_share = sum(bool(a["flags"]) for a in answers) / len(answers)
    assert flagged_share == pytest.approx(1 / 3)  # the CT; the site's own view is not flagged
    trend = daily_trend(engine, days=7)
    assert (trend[-1].images, trend[-1].guard_flags, trend[-1].analyses) == (3, 1, 2)
    # The metric: today's and the week's flag share, and the hold-out's from metadata.json.
    admin_key = create_key(engine, "admin", "prometheus", actor="test")[1]
    text = client.get("/metrics", headers=auth(admin_key)).text
    shares = {s.labels["window"]: s.value for family in text_string_to_metric_families(text)
              for s in family.samples if s.name == "fracturescan_input_guard_flag_share"}
    guard = json.loads((calibrated / "metadata.json").read_text())["guard"]
    assert shares == pytest.approx({"today": flagged_share, "7d": flagged_share,
                                    "holdout": 1 - guard["kept_on_threshold_data"]})
