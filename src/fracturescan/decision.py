"""The clinical decision rules, in one place.

A study's probability is the mean of its images' probabilities (the MURA paper's rule); the
CLI, the evaluation, the service (app and API) and the audit trail all call
:func:`study_probabilities` / :func:`study_probability` rather than averaging on their own.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def study_probabilities(group_index: np.ndarray, probabilities: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's (study's) probability from its images': image ``i`` belongs to group
    ``group_index[i]`` (0..n_groups-1). A group without images gets NaN."""
    index = np.asarray(group_index, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    counts = np.bincount(index, minlength=n_groups)
    sums = np.bincount(index, weights=probs, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def study_probability(probabilities: Iterable[float | None]) -> float | None:
    """One study's probability from its images' (``None`` entries, unreadable images, are left
    out); ``None`` when no image was readable."""
    probs = np.array([p for p in probabilities if p is not None], dtype=np.float64)
    if probs.size == 0:
        return None
    return float(study_probabilities(np.zeros(probs.size, np.int64), probs, 1)[0])
