"""Analyse the DICOM files of one study through the service layer and describe the result for
the DICOM writers (:func:`analyse_study`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from fracturescan.errors import FracturescanError
from fracturescan.pacs.results import StudyResult, result_from_analysis

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

    from fracturescan.service import Analysis, ModelChoice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    """The service's analysis and the DICOM-ready result of one study."""

    analysis: Analysis
    result: StudyResult
    unreadable: int  # files whose header could not even be parsed (not referenced anywhere)


def read_header(data: bytes, name: str) -> Dataset | None:
    """The file's DICOM header without pixels, or None when it cannot be parsed."""
    from fracturescan.data.dicom_dataset import load_dataset

    try:
        return load_dataset(data, name=name, pixels=False, force=True)
    except FracturescanError as exc:
        log.info("%s: header unreadable (%s)", name, type(exc).__name__)
        return None


def analyse_study(predictor: Any, choice: ModelChoice, threshold: float, files: Sequence[tuple[str, bytes]],
                  *, engine: Any = None, user: Any = None, heatmaps: bool = True,
                  max_bytes: int | None = None) -> StudyOutcome:
    """Score (and explain) the DICOM ``files`` of one study with :mod:`fracturescan.service`;
    with ``engine`` and ``user`` the analysis is written to the audit trail
    (:func:`~fracturescan.service.analyse_and_record`).

    Name the files by UID, not by anything identifying: the names reach logs and refusal texts.
    """
    from fracturescan import service

    parsed = [(name, data, read_header(data, name)) for name, data in files]
    usable = [(name, data) for name, data, header in parsed if header is not None]
    sources = [header for _, _, header in parsed if header is not None]
    if engine is not None:
        analysis = service.analyse_and_record(engine, user, choice, predictor, threshold, usable,
                                              max_bytes=max_bytes, heatmaps=heatmaps)
    else:
        analysis, _ = service.analyse_uploads(predictor, usable, threshold, max_bytes=max_bytes, heatmaps=heatmaps)
    result = result_from_analysis(analysis, sources, choice, overlays=heatmaps)
    return StudyOutcome(analysis, result, len(files) - len(usable))
