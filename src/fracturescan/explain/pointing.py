"""The pointing game: does the heatmap peak fall inside the known fracture box?

Real MURA has no localisation labels; the synthetic phantoms do (``annotations.csv``, one
inclusive pixel box per fractured image). The score is computed over TRUE-POSITIVE images
(abnormal and called abnormal), as in Zhang et al.'s pointing game: explaining a missed
fracture is a different question. The score over all annotated positives is reported too,
because a model that learned nothing (e.g. trained on shuffled labels) has few true positives.

A small margin (default 5% of the image side) dilates each box. The heatmap comes from a
feature grid whose cells span 1/8 of the image side or more (see :mod:`.layers`), so the peak
is only known to within about half a cell (>= 6%); the margin absorbs that quantisation, not
model error. Both the strict (margin 0) and dilated hits are recorded per image.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..data.images import read_image
from ..data.sources import open_dataset
from ..errors import DatasetError
from .gradcam import GRAD_CAM, explain_image

if TYPE_CHECKING:
    from ..inference import Predictor

log = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.csv"
#: Box dilation, as a fraction of the image width (x) and height (y).
DEFAULT_MARGIN = 0.05

Box = tuple[int, int, int, int]


def read_annotations(root: Path) -> dict[Path, Box]:
    """Fracture boxes from ``root/annotations.csv``, keyed by the image's resolved path.

    Paths are in MURA's distributed form (``MURA-v1.1/valid/...``): the leading data-set folder
    name is dropped and the rest resolved under ``root``, whatever ``root`` is called.

    Raises:
        DatasetError: the file is missing or a row is malformed.
    """
    file = Path(root) / ANNOTATIONS_FILE
    if not file.is_file():
        raise DatasetError(
            f"{root} has no {ANNOTATIONS_FILE}: the pointing game needs fracture boxes, which only "
            "synthetic phantom data sets provide (make one with 'fracturescan synth')."
        )
    boxes: dict[Path, Box] = {}
    with file.open(newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if line_no == 1 and row and row[0] == "image_path":
                continue
            try:
                x0, y0, x1, y1 = (int(v) for v in row[1:5])
                rel = Path(row[0])
            except (ValueError, IndexError) as exc:
                raise DatasetError(f"{file} line {line_no}: expected image_path,x0,y0,x1,y1, got {row!r}.") from exc
            if rel.parts and rel.parts[0] not in ("train", "valid"):
                rel = Path(*rel.parts[1:])
            boxes[(Path(root) / rel).resolve()] = (x0, y0, x1, y1)
    return boxes


def peak_in_box(peak: tuple[int, int] | None, box: Box, shape: tuple[int, int], margin: float = 0.0) -> bool:
    """True if ``peak`` (row, col) lies in the inclusive ``box`` dilated by ``margin`` x image side."""
    if peak is None:
        return False
    h, w = shape
    x0, y0, x1, y1 = box
    dx, dy = margin * w, margin * h
    row, col = peak
    return x0 - dx <= col <= x1 + dx and y0 - dy <= row <= y1 + dy


@dataclass(frozen=True)
class PointingCase:
    """One annotated positive image: its probability, heatmap peak, box and hits."""

    path: str
    probability: float
    true_positive: bool
    peak: tuple[int, int] | None
    box: Box
    hit: bool  # inside the dilated box
    hit_strict: bool  # inside the box itself
    box_fraction: float  # dilated box area / image area: the hit chance of a random peak


@dataclass(frozen=True)
class PointingResult:
    """Pointing-game scores (None when there is nothing to score) and the per-image cases."""

    split: str
    margin: float
    threshold: float
    layer: str
    score: float | None  # over true positives, dilated boxes
    score_strict: float | None  # over true positives, boxes as annotated
    n_true_positive: int
    score_all_positives: float | None  # over every annotated positive image
    n_annotated_positive: int
    chance: float | None  # mean dilated box fraction over true positives (random-peak score)
    synthetic: bool
    cases: list[PointingCase] = field(default_factory=list)
    model_sha256: str | None = None  # the scored checkpoint's weights, so a stale file is spotted
    method: str = GRAD_CAM  # how the heatmaps were made (GRAD_CAM or REFERENCE_IG)

    def to_dict(self) -> dict:
        """JSON-ready dict (cases included)."""
        return asdict(self)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _score(predictor: "Predictor", path: Path, box: Box, margin: float, method: str) -> tuple[PointingCase, str, str]:
    image = read_image(path)
    exp = explain_image(predictor, image, method=method)
    h, w = image.shape
    x0, y0, x1, y1 = box
    area = (min(x1 + margin * w, w - 1) - max(x0 - margin * w, 0) + 1) * (
        min(y1 + margin * h, h - 1) - max(y0 - margin * h, 0) + 1)
    case = PointingCase(str(path), exp.probability, exp.probability >= predictor.threshold, exp.peak, box,
                        peak_in_box(exp.peak, box, (h, w), margin), peak_in_box(exp.peak, box, (h, w), 0.0),
                        float(area) / (h * w))
    return case, exp.layer, exp.method


def pointing_game(predictor: "Predictor", data: Path, split: str = "valid", margin: float = DEFAULT_MARGIN,
                  progress: bool = True, method: str = "auto") -> PointingResult:
    """Score the heatmap peaks of ``predictor`` against the boxes of a phantom data set.

    ``method`` is passed to :func:`~fracturescan.explain.gradcam.explain_image` (``auto``: what
    the app shows for this checkpoint).

    Raises:
        DatasetError: no ``annotations.csv``, unknown split, or no annotated positive image in it.
    """
    index = open_dataset(Path(data), "all")
    # annotations.csv sits at the data-set root (beside the CSV for a CSV data set)
    boxes = read_annotations(index.root.parent if index.kind == "csv" else index.root)
    positives = [r for r in index.split(split) if r.label == 1 and r.path.resolve() in boxes]
    if not positives:
        raise DatasetError(f"No positive image of split {split!r} in {data} has a box in {ANNOTATIONS_FILE}.")
    cases, layer, used = [], "cam_layer", method
    for record in tqdm(positives, desc="pointing game", unit="image", disable=not progress):
        case, layer, used = _score(predictor, record.path, boxes[record.path.resolve()], margin, method)
        cases.append(case)
    tp = [c for c in cases if c.true_positive]
    result = PointingResult(
        split=split, margin=margin, threshold=predictor.threshold, layer=layer,
        score=_mean([c.hit for c in tp]), score_strict=_mean([c.hit_strict for c in tp]),
        n_true_positive=len(tp), score_all_positives=_mean([c.hit for c in cases]),
        n_annotated_positive=len(cases), chance=_mean([c.box_fraction for c in tp]),
        synthetic=bool(index.synthetic), cases=cases, model_sha256=predictor.metadata.sha256 or None,
        method=used,
    )
    log.info("Pointing game (%s): %s over %d true positives", split, result.score, result.n_true_positive)
    return result


def write_pointing_json(result: PointingResult, path: Path) -> Path:
    """Write ``result`` (scores and per-image cases) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
