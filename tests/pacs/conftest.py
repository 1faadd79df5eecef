"""Fixtures for the PACS tests: a tiny model, a wrist study made from the real CR samples, and
the dciodvfy validator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("highdicom")
pytest.importorskip("pydicom")

from tests.webapp.conftest import DICOM_DIR, make_checkpoint  # noqa: E402

#: The two real CR samples that decode fastest (JPEG Lossless hip, JPEG 2000 tibia).
SAMPLES = ("cr_hip_jpeg_lossless.dcm", "cr_tibia_monochrome1_j2k_lossless.dcm")
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (skips the test when it is missing)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def relabel_as_wrist(source: Path, target: Path, study_uid: str = STUDY_UID, patient: str = "TEST^WRIST",
                     instance: int = 1) -> Path:
    """A copy of a real CR file relabelled as one wrist study with our own patient tags."""
    import pydicom

    if not source.is_file():
        pytest.skip(f"sample {source} missing (see /work/shared/samples/README.md)")
    ds = pydicom.dcmread(source)
    ds.BodyPartExamined = "WRIST"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = f"{study_uid}.{instance}"
    ds.SOPInstanceUID = f"{study_uid}.{instance}.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.AccessionNumber = patient, "FS-TEST-1", "ACC-1"
    ds.SeriesNumber, ds.InstanceNumber = instance, 1
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture(scope="session")
def pacs_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 at 64 px, marked synthetic, threshold 0.5 (fast)."""
    import torch

    torch.set_num_threads(1)
    return make_checkpoint(tmp_path_factory.mktemp("pacs_models") / "run" / "best", synthetic=True)


@pytest.fixture(scope="session")
def wrist_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real CR images relabelled as the two views of one wrist study."""
    folder = tmp_path_factory.mktemp("wrist_study")
    return [relabel_as_wrist(DICOM_DIR / name, folder / f"view{n}.dcm", instance=n)
            for n, name in enumerate(SAMPLES, 1)]
