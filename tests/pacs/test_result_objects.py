"""The DICOM result objects (TID 1500 SR, Secondary Capture) of a real analysis: valid by
dciodvfy, in the source study, and reading back to the values the analysis produced."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")

from tests.pacs.conftest import walk_content  # noqa: E402


@pytest.fixture(scope="module")
def outcome(pacs_checkpoint: Path, wrist_study: list[Path], tmp_path_factory: pytest.TempPathFactory):
    """The two-view wrist study analysed with the tiny model, plus a third file without pixels."""
    import pydicom

    from fracturescan.inference import Predictor
    from fracturescan.pacs.analyse import analyse_study
    from fracturescan.service import discover_models

    choice = discover_models(None, [pacs_checkpoint])[0]
    predictor = Predictor.from_checkpoint(pacs_checkpoint, device="cpu", backend="torch")
    no_pixels = pydicom.dcmread(wrist_study[0])
    del no_pixels.PixelData
    no_pixels.SOPInstanceUID = no_pixels.SOPInstanceUID + ".9"
    buffer = io.BytesIO()
    no_pixels.save_as(buffer, enforce_file_format=True)
    files = [(f"{p.stem}.dcm", p.read_bytes()) for p in wrist_study] + [("third.dcm", buffer.getvalue())]
    return analyse_study(predictor, choice, 0.5, files), predictor


def test_sr_and_sc_are_valid_and_read_back(outcome, wrist_study: list[Path], tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    from fracturescan.pacs.files import result_datasets, write_datasets
    from fracturescan.pacs.sr import SCHEME
    from tests.pacs.conftest import dciodvfy_errors

    study, _ = outcome
    result = study.result
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in wrist_study]
    assert [r.source.SOPInstanceUID for r in result.images] == [s.SOPInstanceUID for s in sources]
    assert len(result.refusals) == 1 and "no pixel data" in result.refusals[0].reason
    paths = write_datasets(result_datasets(result), tmp_path)
    assert len(paths) == 3  # one SR, one SC per analysed image
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name

    sr = hd.sr.srread(paths[0])
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    assert sr.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    assert sr.PatientID == sources[0].PatientID
    items = list(walk_content(sr.ContentSequence))
    numbers = [(i.ConceptNameCodeSequence[0].CodeValue, float(i.MeasuredValueSequence[0].NumericValue))
               for i in items if i.ValueType == "NUM"]
    probs = [image.probability for image in study.analysis.readable]
    study_p = float(np.mean(probs))  # MURA's study rule, computed here independently
    assert [v for code, v in numbers if code == "PABN"] == pytest.approx([study_p] + probs, abs=1e-6)
    assert [v for code, v in numbers if code == "THRESH"] == [0.5]
    findings = [i.ConceptCodeSequence[0].CodeMeaning for i in items
                if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Finding"]
    expected = ["Abnormal" if p >= 0.5 else "Normal" for p in [study_p] + probs]
    assert findings == expected
    texts = " ".join(i.TextValue for i in items if i.ValueType == "TEXT")
    assert "not a diagnosis" in texts and "SYNTHETIC MODEL" in texts and "no pixel data" in texts
    assert f"weights sha256:{result.model_sha256}" in texts  # the algorithm's parameters
    referenced = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"}
    assert referenced == {s.SOPInstanceUID for s in sources} | {result.refusals[0].source.SOPInstanceUID}
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == SCHEME
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 4  # study, two images, one refusal
    named = {(i.ConceptNameCodeSequence[0].CodeMeaning, i.TextValue) for i in items if i.ValueType == "TEXT"}
    assert ("Algorithm Version", result.model_version) in named
    assert ("Algorithm Name", f"fracturescan {result.model_id}") in named

    from fracturescan.service import overlay_png
    from PIL import Image

    for path, item, source in zip(paths[1:], study.analysis.readable, sources):
        sc = pydicom.dcmread(path)
        assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.Modality == "OT"
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert sc.BurnedInAnnotation == "YES" and "not a diagnosis" in sc.ImageComments
        assert sc.BodyPartExamined == "WRIST"
        picture = np.asarray(Image.open(io.BytesIO(overlay_png(item, 0.5, True))).convert("RGB"))
        assert np.array_equal(sc.pixel_array, picture)  # the same picture the API returns
    series = {pydicom.dcmread(p).SeriesInstanceUID for p in paths}
    assert len(series) == 2  # the SR series and the SC series, both new


def test_sr_without_any_analysed_image_says_so(outcome, tmp_path: Path) -> None:
    import pydicom

    from fracturescan.pacs.files import write_datasets
    from fracturescan.pacs.results import Refusal, StudyResult
    from fracturescan.pacs.sr import build_sr
    from tests.pacs.conftest import dciodvfy_errors

    study, _ = outcome
    source = study.result.images[0].source
    refused = StudyResult([], None, 0.5, None, "m", "v", "0" * 64, False,
                          [Refusal(source, "modality CT is not a radiograph")])
    path = write_datasets([build_sr(refused)], tmp_path)[0]
    assert dciodvfy_errors(path) == []
    items = list(walk_content(pydicom.dcmread(path).ContentSequence))
    texts = [i.TextValue for i in items if i.ValueType == "TEXT"]
    assert any(t.startswith("Not analysed: none") for t in texts)
    assert "Not analysed: modality CT is not a radiograph" in texts
    assert not any(i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "PABN" for i in items)
    assert not any("SYNTHETIC" in t for t in texts)  # only when the model is synthetic
