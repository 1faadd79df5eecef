"""What a DICOM result says, independent of how it is encoded: :class:`StudyResult`, built
from a :class:`~fracturescan.service.Analysis` and the headers of the analysed images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..notices import SECOND_READER, SYNTHETIC_MODEL

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

    from fracturescan.service import Analysis, ModelChoice

#: Series numbers of the result series (high, so viewers list them after the acquisition).
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
MANUFACTURER = "fracturescan (open source)"

#: The study levels a result can state. "indeterminate" is the doubt level of the decision rule.
LEVELS = ("abnormal", "normal", "indeterminate")



@dataclass(frozen=True)
class ImageResult:
    """One analysed source image: its header (pixels not needed), probability and picture."""

    source: Dataset
    probability: float
    overlay: np.ndarray | None = None  # uint8 RGB (H, W, 3): the captioned heatmap figure


@dataclass(frozen=True)
class Refusal:
    """A received image that was not analysed, and why (no patient data in ``reason``)."""

    source: Dataset
    reason: str


@dataclass(frozen=True)
class StudyResult:
    """One study's result as the DICOM writers need it."""

    images: list[ImageResult]
    study_probability: float | None
    threshold: float
    level: str | None  # one of LEVELS; None when nothing could be analysed
    model_id: str
    model_version: str
    model_sha256: str
    synthetic: bool
    refusals: list[Refusal] = field(default_factory=list)
    audit_id: int | None = None

    @property
    def sources(self) -> list[Dataset]:
        """Every source image referenced: the analysed ones, then the refused ones."""
        return [i.source for i in self.images] + [r.source for r in self.refusals]

    @property
    def notices(self) -> list[str]:
        """The sentences every result object carries."""
        return [SECOND_READER] + ([SYNTHETIC_MODEL] if self.synthetic else [])


def study_level(probability: float | None, threshold: float) -> str | None:
    """The study's level under the single-threshold rule (``None`` without a probability)."""
    if probability is None:
        return None
    return "abnormal" if probability >= threshold else "normal"


def _png_to_rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture.convert("RGB"))


def result_from_analysis(analysis: Analysis, sources: Sequence[Dataset], choice: ModelChoice,
                         *, overlays: bool = True) -> StudyResult:
    """The result of ``analysis``, whose i-th image was read from the file whose header is
    ``sources[i]``. Each overlay is the PNG the API returns (:func:`service.overlay_png`)."""
    from fracturescan.service import overlay_png

    if len(sources) != len(analysis.images):
        raise ValueError(f"{len(sources)} source headers for {len(analysis.images)} analysed images")
    synthetic = bool(choice.metadata.synthetic)
    images, refusals = [], []
    for item, source in zip(analysis.images, sources):
        if item.probability is None:
            refusals.append(Refusal(source, item.error or "not analysed"))
            continue
        png = overlay_png(item, analysis.threshold, synthetic) if overlays else None
        images.append(ImageResult(source, float(item.probability), None if png is None else _png_to_rgb(png)))
    study_p = analysis.study_probability
    # The decision rule's three levels when the checkpoint has operating points ("doubt" is
    # DICOM's "indeterminate"), else the single threshold's two.
    level = {"doubt": "indeterminate"}.get(analysis.level or "", analysis.level) or study_level(study_p, analysis.threshold)
    return StudyResult(images, study_p, analysis.threshold, level,
                       choice.model_id, choice.version, choice.metadata.sha256, synthetic, refusals,
                       analysis.audit_id)


def describe(result: StudyResult, extra: dict[str, Any] | None = None) -> str:
    """A one-line summary without patient data (for logs)."""
    p = "n/a" if result.study_probability is None else f"{result.study_probability:.3f}"
    return (f"{len(result.images)} image(s) analysed, {len(result.refusals)} refused, study P={p}, "
            f"level {result.level or 'none'}" + "".join(f", {k} {v}" for k, v in (extra or {}).items()))
