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


def _mr_dicom() -> bytes:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(io.BytesIO(as_wrist_dicom(hand())))
    ds.Modality = "MR"
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
    files = [("files", ("view.png", site_view, "image/png")), ("files", ("mr.dcm", _mr_dicom(), "application/dicom"))]
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
