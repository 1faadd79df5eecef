"""DICOM result objects for an analysis of uploaded files (the API's ``?dicom=true`` and the
Doctor page's download), so a site without a DICOM node can still file results into PACS."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

from fracturescan.pacs.analyse import read_header
from fracturescan.pacs.results import result_from_analysis

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

    from fracturescan.service import Analysis, ModelChoice


def dicom_results(analysis: Analysis, uploads: Sequence[tuple[str, bytes]],
                  choice: ModelChoice) -> tuple[list[Dataset], str | None]:
    """(SR + SCs of the analysis, None), or ([], why not). ``uploads`` are the (name, bytes)
    the analysis was made from, in the same order.

    Results go into the source study, so every analysed file must be DICOM of one study.
    """
    from fracturescan.pacs.files import result_datasets

    if len(uploads) != len(analysis.images):
        raise ValueError("uploads and analysed images differ")
    readable = [(item, data) for item, (_, data) in zip(analysis.images, uploads) if item.probability is not None]
    if not readable:
        return [], "No DICOM results: no file could be analysed."
    if any(item.file_type != "dicom" for item, _ in readable):
        return [], "No DICOM results: PNG/JPEG files belong to no DICOM study; send the DICOM files."
    headers: list[Any] = [read_header(data, item.name) for item, data in readable]
    studies = {str(h.get("StudyInstanceUID", "")) for h in headers if h is not None}
    if None in headers or len(studies) != 1 or "" in studies:
        return [], "No DICOM results: the files are not all from one DICOM study with a StudyInstanceUID."
    only = dataclasses.replace(analysis, images=[item for item, _ in readable])
    return result_datasets(result_from_analysis(only, headers, choice)), None
