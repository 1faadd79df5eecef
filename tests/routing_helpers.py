"""Studies for the body-part routing tests: phantom views as PNG or as DICOM with a BodyPartExamined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.reliability.bad_inputs import dicom_bytes, dicom_dataset


def phantom_study(data: Path, part: str, split: str = "valid") -> list[Path]:
    """The images of the first study of ``part`` in ``split``."""
    for line in (data / f"{split}_labeled_studies.csv").read_text().splitlines():
        if f"/{part}/" in line:
            folder = data / line.split(",")[0].removeprefix("MURA-v1.1/")
            return sorted(folder.glob("image*.png"))
    raise AssertionError(f"no {part} study in {split}")


def as_dicom(png: Path, body_part: str | None) -> tuple[str, bytes]:
    """A phantom view as a CR DICOM file with the given BodyPartExamined."""
    pixels = np.asarray(Image.open(png), dtype=np.uint8)
    attrs = {"BodyPartExamined": body_part} if body_part else {}
    return png.with_suffix(".dcm").name, dicom_bytes(dicom_dataset(pixels, **attrs))


def as_png(png: Path) -> tuple[str, bytes]:
    return png.name, png.read_bytes()
