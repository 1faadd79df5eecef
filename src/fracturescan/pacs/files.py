"""All result objects of a study (one SR, one Secondary Capture per analysed image with a
heatmap) and writing them as DICOM files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fracturescan.pacs.results import StudyResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset


def result_datasets(result: StudyResult, previous_sr: Dataset | None = None) -> list[Dataset]:
    """The SR first, then the Secondary Captures, each series new in the source study.
    ``previous_sr``: the SR this result supersedes (named as its predecessor document)."""
    import highdicom as hd

    from fracturescan.pacs.sc import build_sc
    from fracturescan.pacs.sr import build_sr

    objects = [build_sr(result, previous=previous_sr)]
    sc_series = hd.UID()
    pictured = [image for image in result.images if image.overlay is not None]
    objects += [build_sc(result, image, series_uid=sc_series, instance_number=n)
                for n, image in enumerate(pictured, 1)]
    return objects


def file_name(ds: Dataset) -> str:
    """``SR_<SOPInstanceUID>.dcm`` / ``SC_<...>.dcm``: UIDs only, no patient data in names."""
    kind = "SR" if ds.Modality == "SR" else "SC"
    return f"{kind}_{ds.SOPInstanceUID}.dcm"


def to_bytes(ds: Dataset) -> bytes:
    """One object as a DICOM Part 10 file."""
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_datasets(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Write each object as ``folder/<file_name>``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / file_name(ds)
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def zip_datasets(datasets: list[Dataset]) -> bytes:
    """The objects as one zip archive of DICOM files (for a browser download)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for ds in datasets:
            archive.writestr(file_name(ds), to_bytes(ds))
    return buffer.getvalue()
