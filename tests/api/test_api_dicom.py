"""``POST /v1/predict?dicom=true``: the study's results as DICOM files for PACS (SR + heatmap
SCs in the source study), valid by dciodvfy, with the probabilities the JSON reports."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

pytest.importorskip("highdicom")

from tests.api.conftest import png_bytes  # noqa: E402
from tests.pacs.conftest import dciodvfy_errors, walk_content  # noqa: E402
from tests.pacs.netkit import small_cr  # noqa: E402


def _dicom_bytes(study: str, n: int) -> bytes:
    buffer = io.BytesIO()
    small_cr(study, n).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_predict_returns_sr_and_sc_files(make_client, doctor_key: str, api_checkpoint: Path, tmp_path: Path) -> None:
    import pydicom

    client = make_client(model_paths=(api_checkpoint,))
    study = "1.2.826.0.1.3680043.8.498.5001"
    files = [("files", (f"view{n}.dcm", _dicom_bytes(study, n), "application/dicom")) for n in (1, 2)]
    reply = client.post("/v1/predict?dicom=true", headers={"Authorization": f"Bearer {doctor_key}"}, files=files)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    objects = body["dicom_objects"]
    assert sorted(o["modality"] for o in objects) == ["OT", "OT", "SR"]
    assert all(image.get("heatmap_png") is None for image in body["images"])  # not asked for
    datasets = []
    for item in objects:
        path = tmp_path / item["file_name"]
        path.write_bytes(base64.b64decode(item["dicom_base64"]))
        assert dciodvfy_errors(path) == [], item["file_name"]
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study and ds.SOPInstanceUID == item["sop_instance_uid"]
        datasets.append(ds)
    sr = next(ds for ds in datasets if ds.Modality == "SR")
    values = [float(i.MeasuredValueSequence[0].NumericValue) for i in walk_content(sr.ContentSequence)
              if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "PABN"]
    expected = [body["study"]["probability"]] + [image["probability"] for image in body["images"]]
    assert values == pytest.approx(expected, abs=1e-6)
    references = {ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in datasets if ds.Modality == "OT"}
    assert references == {f"{study}.1.1", f"{study}.1.2"}


def test_predict_dicom_for_png_says_why_there_are_none(make_client, doctor_key: str, api_checkpoint: Path) -> None:
    client = make_client(model_paths=(api_checkpoint,))
    files = [("files", ("view.png", png_bytes(1), "image/png"))]
    reply = client.post("/v1/predict?dicom=true", headers={"Authorization": f"Bearer {doctor_key}"}, files=files)
    assert reply.status_code == 200
    body = reply.json()
    assert body["dicom_objects"] == []
    assert any("PNG/JPEG files belong to no DICOM study" in w for w in body["warnings"])
    assert client.post("/v1/predict", headers={"Authorization": f"Bearer {doctor_key}"},
                       files=files).json()["dicom_objects"] is None  # not asked for
