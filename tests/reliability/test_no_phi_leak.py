"""No identifying DICOM attribute leaks into CLI output, result files, error messages or logs.

A DICOM carries sentinel values in every identifying attribute a radiograph usually has; it is
run through ``fracturescan predict --json --csv`` (readable, without pixels, and damaged
variants) with logging captured at DEBUG, and through the reader with random damage.  No
sentinel may appear anywhere the program writes.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pydicom")

from fracturescan.cli.main import main  # noqa: E402
from fracturescan.data.dicom_dataset import dicom_metadata_safe, load_dataset  # noqa: E402
from fracturescan.data.images import read_image  # noqa: E402
from fracturescan.errors import FracturescanError  # noqa: E402
from fracturescan.models import build_model  # noqa: E402
from fracturescan.models.checkpoint import save_checkpoint  # noqa: E402

from .bad_inputs import dicom_bytes, dicom_dataset, gradient  # noqa: E402

#: Identifying attributes and their sentinel values (dates/times are implausible on purpose).
SENTINELS: dict[str, str] = {
    "PatientName": "SENTINEL^NAME",
    "PatientID": "SENTINEL-ID-123",
    "PatientBirthDate": "18990317",
    "PatientSex": "O",
    "PatientAge": "099Y",
    "PatientAddress": "SENTINEL STREET 7",
    "OtherPatientIDs": "SENTINEL-OTHER-456",
    "AccessionNumber": "SENTACC789",
    "InstitutionName": "SENTINEL HOSPITAL",
    "InstitutionAddress": "SENTINEL AVENUE 1",
    "ReferringPhysicianName": "SENTINEL^REFERRER",
    "PerformingPhysicianName": "SENTINEL^PERFORMER",
    "OperatorsName": "SENTINEL^OPERATOR",
    "StationName": "SENTINELSTATION",
    "StudyDate": "18990318",
    "SeriesDate": "18990319",
    "AcquisitionDate": "18990320",
    "StudyTime": "235959.123456",
    "StudyID": "SENTSTUDY42",
    "StudyDescription": "SENTINEL WRIST STUDY",
}
#: Substrings that must never be written (each distinctive enough not to occur by chance).
FORBIDDEN = ("SENTINEL", "Sentinel", "sentinel", "SENTACC789", "SENTSTUDY42", "1899031",
             "18990320", "235959", "099Y")


def _sentinel_dataset(pixels: np.ndarray | None):
    ds = dicom_dataset(pixels, BodyPartExamined="WRIST", ViewPosition="PA")
    for key, value in SENTINELS.items():
        setattr(ds, key, value)
    return ds


def _assert_clean(where: str, text: str) -> None:
    found = [s for s in FORBIDDEN if s in text]
    assert not found, f"identifying value(s) {found} leaked into {where}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet18", weights="none", hidden=16)
    return save_checkpoint(tmp_path_factory.mktemp("phi_ckpt") / "best", model, {"input_size": 32})


def _readable() -> bytes:
    return dicom_bytes(_sentinel_dataset(gradient(24, 20, np.uint16)))


def _no_pixels() -> bytes:
    return dicom_bytes(_sentinel_dataset(None))


def _size_mismatch() -> bytes:
    ds = _sentinel_dataset(gradient(8, 8, np.uint16))
    ds.Rows = 64
    return dicom_bytes(ds)


def _bad_vr_values() -> bytes:
    """Sentinels in values that break their VR's rules, so pydicom complains if it parses them."""
    ds = _sentinel_dataset(gradient(8, 8, np.uint16))
    data = dicom_bytes(ds)
    return data.replace(b"18990317", b"SENTINEL")  # a DA (date) holding letters


def test_sentinel_file_really_carries_the_sentinels() -> None:
    """Guard against a vacuous test: the values are in the file and pydicom reads them back."""
    data = _readable()
    ds = load_dataset(data, name="x.dcm")
    assert str(ds.PatientName) == "SENTINEL^NAME" and ds.AccessionNumber == "SENTACC789"
    assert all(value.encode() in data for value in SENTINELS.values())


def test_metadata_safe_returns_no_identifying_value() -> None:
    meta = dicom_metadata_safe(load_dataset(_readable(), name="x.dcm"))
    assert set(meta) == {"modality", "body_part_examined", "photometric_interpretation", "rows",
                         "columns", "bits_stored", "view_position", "transfer_syntax",
                         "transfer_syntax_name"}
    assert meta["body_part_examined"] == "WRIST" and meta["rows"] == 24  # the useful part is there
    _assert_clean("dicom_metadata_safe", repr(meta))


@pytest.mark.parametrize("make", [_readable, _no_pixels, _size_mismatch, _bad_vr_values],
                         ids=["readable", "no_pixels", "size_mismatch", "bad_vr_values"])
def test_cli_predict_writes_no_identifying_value(
        make, checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    image = tmp_path / "xray.dcm"
    image.write_bytes(make())
    json_out, csv_out = tmp_path / "out.json", tmp_path / "out.csv"
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["--verbose", "predict", str(checkpoint), str(image), "--json", str(json_out),
                     "--csv", str(csv_out), "--device", "cpu"])
    out, err = capfd.readouterr()
    assert code == (0 if make is _readable or make is _bad_vr_values else 1)
    assert json_out.is_file() and csv_out.is_file()
    _assert_clean("stdout", out)
    _assert_clean("stderr", err)
    _assert_clean("the JSON file", json_out.read_text())
    _assert_clean("the CSV file", csv_out.read_text())
    _assert_clean("the log", "\n".join(r.getMessage() for r in caplog.records))
    _assert_clean("warnings", "\n".join(str(w.message) for w in caught))
    assert "xray.dcm" in json_out.read_text()  # the files really hold this image's result


def test_damaged_sentinel_files_never_echo_identifying_values(caplog: pytest.LogCaptureFixture) -> None:
    """A damaged length makes e.g. Modality swallow the patient module; error messages, pydicom's
    warnings and our logs must not quote it."""
    caplog.set_level(logging.DEBUG)
    base = _readable()
    rng = np.random.default_rng(2024)
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages = _read_damaged(base, rng, 300)
    assert len(messages) > 20  # the damage really produced errors to inspect
    _assert_clean("error messages", "\n".join(messages))
    _assert_clean("the log", "\n".join(r.getMessage() for r in caplog.records))
    _assert_clean("warnings", "\n".join(str(w.message) for w in caught))


def _read_damaged(base: bytes, rng: np.random.Generator, count: int) -> list[str]:
    """Read ``count`` randomly damaged copies of ``base``; return the error messages."""
    messages = []
    for _ in range(count):
        data = bytearray(base)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            del data[int(rng.integers(132, len(data))):]
        try:
            read_image(bytes(data), name="damaged.dcm")
        except FracturescanError as exc:
            messages.append(str(exc))
    return messages


def test_metadata_safe_drops_a_field_that_swallowed_its_neighbours() -> None:
    """Modality's length field enlarged: its value now runs into the patient module."""
    data = bytearray(_readable())
    at = data.index(b"\x08\x00\x60\x00CS")  # (0008,0060) Modality, explicit VR
    data[at + 6 : at + 8] = (400).to_bytes(2, "little")
    ds = load_dataset(bytes(data), name="x.dcm")
    assert "SENTINEL" in str(ds.get("Modality"))  # pydicom alone would hand the PHI on
    meta = dicom_metadata_safe(ds)
    assert meta["modality"] is None
    _assert_clean("dicom_metadata_safe", repr(meta))
