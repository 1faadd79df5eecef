"""The Doctor page offers a DICOM study's results as SR + heatmap SC files for PACS."""

from __future__ import annotations

import io
import zipfile

import pytest

pytest.importorskip("highdicom")

from .test_app import login, new_app  # noqa: E402
from .conftest import DOCTOR_PASSWORD  # noqa: E402


def test_doctor_downloads_dicom_results_of_a_dicom_study(engine) -> None:
    import pydicom

    from tests.pacs.netkit import small_cr

    study = "1.2.826.0.1.3680043.8.498.6001"
    buffer = io.BytesIO()
    small_cr(study, 1).save_as(buffer, enforce_file_format=True)
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    at.get("file_uploader")[0].set_value(("view1.dcm", buffer.getvalue(), "application/dicom"))
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    at.run()
    next(b for b in at.button if b.label.startswith("Prepare DICOM results")).click()
    at.run()
    assert not at.exception
    assert len(at.get("download_button")) == 1
    with zipfile.ZipFile(io.BytesIO(at.session_state["doctor_dicom_zip"])) as archive:
        datasets = [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in archive.namelist()]
    assert sorted(ds.Modality for ds in datasets) == ["OT", "SR"]
    assert {ds.StudyInstanceUID for ds in datasets} == {study}
