"""Real DICOM files for the tests, found without any network access.

One real radiograph is committed under ``tests/samples/`` (see its README for source and licence);
two more come from the ``pydicom-data`` package (in the ``dev`` extra). A test that needs a file
which is not there is skipped with a reason naming the file and how to get it, so the skip shows
in the pytest summary (``-ra``) instead of passing silently.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SAMPLES_DIR = Path(__file__).resolve().parent / "samples" / "dicom"

#: Right hand PA, KODAK CR, MONOCHROME2, 2500x2048, 12-bit, JPEG 2000 lossless (committed).
HAND = SAMPLES_DIR / "cr_hand_pa_j2k_lossless.dcm"

#: Distal tibia CR, MONOCHROME1, 1760x1760, 10-bit, JPEG 2000 lossless (pydicom-data).
TIBIA = "RG3_J2KR.dcm"

#: NM whole-body scan, MONOCHROME2, 1024x256, JPEG Lossless SV1 (pydicom-data).
JPEG_LOSSLESS = "JPEG-LL.dcm"


def pydicom_data_path(name: str) -> Path | None:
    """Path of ``name`` inside the installed pydicom-data package, or None.

    pydicom's own ``get_testdata_file`` would download a missing file from the internet; the
    tests must stay offline, so the package folder is read directly.
    """
    spec = importlib.util.find_spec("data_store")  # pydicom-data's import name
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / name
    return path if path.is_file() else None


def hand() -> Path:
    """The committed real hand radiograph; skips (with the reason) if the checkout lacks it."""
    if not HAND.is_file():
        pytest.skip(f"real sample {HAND} missing from the checkout")
    return HAND


def pydicom_data_file(name: str) -> Path:
    """The real file ``name`` from pydicom-data; skips (with the reason) if it is not installed."""
    path = pydicom_data_path(name)
    if path is None:
        pytest.skip(f"real sample {name} needs the pydicom-data package (pip install -e '.[dev]')")
    return path


def tibia() -> Path:
    """The real MONOCHROME1 tibia CR (JPEG 2000 lossless)."""
    return pydicom_data_file(TIBIA)


def jpeg_lossless() -> Path:
    """A real JPEG Lossless SV1 file (the codec CR archives often use)."""
    return pydicom_data_file(JPEG_LOSSLESS)
