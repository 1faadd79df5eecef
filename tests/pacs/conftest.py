"""Fixtures for the PACS tests: a tiny model, a wrist study made from the real CR samples, and
the dciodvfy validator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("highdicom")
pytest.importorskip("pydicom")

from tests.real_samples import hand, tibia  # noqa: E402
from tests.webapp.conftest import make_checkpoint  # noqa: E402

STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (skips the test when it is missing)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def walk_content(items):
    """Every content item of an SR content tree, depth first."""
    for item in items:
        yield item
        yield from walk_content(item.get("ContentSequence", []))


def sr_texts(sr) -> str:
    """All TEXT values of an SR, joined."""
    return " | ".join(str(i.TextValue) for i in walk_content(sr.ContentSequence) if i.ValueType == "TEXT")


def relabel_as_wrist(source: Path, target: Path, study_uid: str = STUDY_UID, patient: str = "TEST^WRIST",
                     instance: int = 1) -> Path:
    """A copy of a real CR file relabelled as one wrist study with our own patient tags."""
    import pydicom

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
    """Two real CR images (tests/real_samples.py: the hand and the tibia, both JPEG 2000 lossless)
    relabelled as the two views of one wrist study."""
    folder = tmp_path_factory.mktemp("wrist_study")
    return [relabel_as_wrist(source, folder / f"view{n}.dcm", instance=n)
            for n, source in enumerate((hand(), tibia()), 1)]
