"""The MURA paper's table: study-level results per body part, plus the pooled row.

Rajpurkar et al. (2017) report Cohen's kappa per body part (elbow, finger, forearm, hand,
humerus, shoulder, wrist) and over all studies. :func:`body_part_table` gives that table with
ROC AUC, sensitivity and specificity beside kappa, each with a percentile-bootstrap 95% interval
that resamples the part's patients (with all their studies; each study its own patient when no
patient ids are given); the pooled row is exactly the report's study level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fracturescan.errors import DatasetError
from fracturescan.evaluation.bootstrap import bootstrap_ci
from fracturescan.evaluation.metrics import aggregate_studies, binary_metrics, group_codes
from fracturescan.evaluation.report_format import Block

__all__ = ["PART_METRICS", "POOLED", "body_part_blocks", "body_part_table", "study_body_parts"]

#: The table's metrics: (key in binary_metrics, column title).
PART_METRICS: tuple[tuple[str, str], ...] = (
    ("kappa", "Kappa"), ("auc", "AUC"), ("recall", "Sensitivity"), ("specificity", "Specificity"),
)
#: Name of the all-studies row.
POOLED = "pooled"


def study_body_parts(study_ids: Sequence[Any], body_parts: Sequence[str]) -> list[str]:
    """The body part of each study, in :func:`~fracturescan.evaluation.metrics.aggregate_studies`'
    order (first appearance).

    Raises:
        DatasetError: lengths differ, or one study lists images of two body parts.
    """
    if len(body_parts) != len(study_ids):
        raise DatasetError(f"got {len(body_parts)} body parts for {len(study_ids)} images; pass one per image")
    index, ids = group_codes(study_ids)
    parts: list[str | None] = [None] * len(ids)
    for k, part in zip(index, body_parts):
        if parts[k] is None:
            parts[k] = str(part)
        elif parts[k] != str(part):
            raise DatasetError(f"study {ids[k]} has images of {parts[k]} and {part}; a study shows one body part")
    return [str(p) for p in parts]


def _row(name: str, y: np.ndarray, p: np.ndarray, patients: np.ndarray | None, n_images: int, threshold: float,
         n_boot: int, seed: int, alpha: float) -> dict[str, Any]:
    metrics = binary_metrics(y, p, threshold)
    ci = bootstrap_ci(y, p, threshold, patients, n_boot=n_boot, seed=seed, alpha=alpha)
    row: dict[str, Any] = {"body_part": name, "studies": int(y.shape[0]), "abnormal_studies": int(y.sum()),
                           "images": int(n_images)}
    for key, _ in PART_METRICS:
        row[key] = metrics[key]
        row[f"{key}_ci95"] = ci[key]
    return row


def body_part_table(study_ids: Sequence[Any], body_parts: Sequence[str], y_true: ArrayLike,
                    y_prob: ArrayLike, threshold: float, *, n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05, patient_ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """Study-level kappa, AUC, sensitivity and specificity per body part and pooled.

    Args:
        study_ids, body_parts, y_true, y_prob: one entry per image; a study's probability is the
            mean of its images' (MURA's rule), its label the images' shared label.
        threshold: decision threshold (``prob >= threshold`` is abnormal).
        n_boot, seed, alpha: bootstrap resamples of each row's patients, seed, 1 - coverage.
        patient_ids: the patient of each image (the bootstrap's resampling unit); None treats
            each study as its own patient.

    Returns:
        ``{"level": "study", "threshold", "rows": [...]}``: one row per body part (sorted by
        name), then the pooled row, each with ``studies``, ``abnormal_studies``, ``images``, the
        metrics (None where undefined, e.g. AUC of a part with one class) and ``<metric>_ci95``.
    """
    study = aggregate_studies(study_ids, y_true, y_prob)
    parts = np.asarray(study_body_parts(study_ids, body_parts), dtype=object)
    patients = None
    if patient_ids is not None:  # a study's patient: that of its first image (first appearance order)
        _, first = np.unique(study.image_index, return_index=True)
        patients = np.asarray([str(pid) for pid in patient_ids], dtype=object)[first]
    rows = []
    for name in sorted(set(parts)):
        mask = parts == name
        rows.append(_row(name, study.y_true[mask], study.y_prob[mask], None if patients is None else patients[mask],
                         int(study.n_images[mask].sum()), threshold, n_boot, seed, alpha))
    rows.append(_row(POOLED, study.y_true, study.y_prob, patients, int(study.n_images.sum()), threshold, n_boot,
                     seed, alpha))
    return {"level": "study", "threshold": float(threshold), "rows": rows}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(ci: Sequence[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def body_part_blocks(table: Mapping[str, Any]) -> list[Block]:
    """The table as report blocks (Markdown and HTML render the same blocks)."""
    header = ["Body part", "Studies (abnormal)"]
    for _, title in PART_METRICS:
        header += [title, "95% CI"]
    rows = []
    for row in table["rows"]:
        cells = [row["body_part"], f"{row['studies']} ({row['abnormal_studies']})"]
        for key, _ in PART_METRICS:
            cells += [_cell(row[key]), _interval(row[f"{key}_ci95"])]
        rows.append(cells)
    return [("h2", "Per body part (study level, as in the MURA paper)"), ("table", header, rows),
            ("p", "Each row's studies are scored at the same threshold; a study's probability is the mean of "
                  "its images'. Intervals resample the row's patients. The pooled row covers every study.")]
