"""Plain records that every reader produces and every consumer accepts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

#: The seven body parts of MURA v1.1, as spelled in its folder names.
BODY_PARTS: tuple[str, ...] = (
    "XR_ELBOW",
    "XR_FINGER",
    "XR_FOREARM",
    "XR_HAND",
    "XR_HUMERUS",
    "XR_SHOULDER",
    "XR_WRIST",
)

#: Label names, index = label value.
LABEL_NAMES: tuple[str, str] = ("normal", "abnormal")


@dataclass(frozen=True)
class ImageRecord:
    """One radiograph with the label it inherits from its study.

    Attributes:
        path: absolute path of the image file.
        label: 1 = abnormal (positive), 0 = normal.
        study_id: unique study key, e.g. ``train/XR_WRIST/patient00001/study1_positive``.
        patient_id: patient key, e.g. ``patient00001`` (used for patient-level splits).
        body_part: e.g. ``XR_WRIST``; ``"unknown"`` for generic data sets.
        split: ``train``, ``valid`` or ``""`` when the source has no split.
    """

    path: Path
    label: int
    study_id: str
    patient_id: str
    body_part: str = "unknown"
    split: str = ""


def missing_files(records: Sequence[ImageRecord]) -> list[str]:
    """Paths of the records whose file is not on disk. One file-system check per image: on a
    slow or network disk a data set of tens of thousands of images takes a while, so a progress
    bar appears when it does."""
    return [str(r.path) for r in tqdm(records, desc="checking files", unit="img", delay=2, leave=False)
            if not r.path.is_file()]
