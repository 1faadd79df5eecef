"""Two operating points for a three-level answer: abnormal / doubt / normal.

A single cut forces every study into "fracture" or "no fracture". Radiology products instead give
two cuts chosen on held-out studies (never on the test set):

* the **high-sensitivity** cut ``low``: the highest threshold still catching at least
  ``target_sensitivity`` of abnormal studies; below it a study is *normal* (few fractures hide
  there);
* the **high-specificity** cut ``high``: the lowest threshold keeping at least
  ``target_specificity`` of normal studies below it; at or above it a study is *abnormal* (few
  false alarms there);
* in between, *doubt*: the reader decides.

Each cut sits midway between the two scores around it (any cut in that gap gives the same rates
on the fitting data; the middle is the least fragile). The band always contains the single
decision threshold, so *abnormal* and *normal* agree with the single-threshold decision and the
band only holds back the studies nearest to it. When the model separates the classes so well
that ``low > high``, both targets hold at once: both cuts collapse onto the single threshold
(clipped into ``[high, low]``) and the three-level answer equals the single-threshold one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fracturescan.errors import ConfigError, DatasetError
from fracturescan.evaluation.threshold import gap_middle, operating_points
from fracturescan.records import StoredRecord

__all__ = ["MIN_STUDIES_PER_CLASS", "DecisionPoints", "choose_decision_points"]

#: Fewer studies of a class than this and one study moves the measured rate by more than 20%:
#: no operating point is chosen from so little.
MIN_STUDIES_PER_CLASS = 5
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class DecisionPoints(StoredRecord):
    """The two cuts (on calibrated study probabilities) and how they did where they were chosen.

    Attributes:
        low: high-sensitivity cut; a study below it is *normal*.
        high: high-specificity cut; a study at or above it is *abnormal*; ``low <= high``.
        target_sensitivity, target_specificity: what was asked for.
        sensitivity_at_low, specificity_at_low: rates at ``low`` on the fitting data.
        sensitivity_at_high, specificity_at_high: rates at ``high`` on the fitting data.
        n_abnormal, n_normal: studies of each class the cuts were chosen on.
        resolvable: False when a class had fewer than ``1 / (1 - target)`` studies, so a single
            study is a bigger step than the allowed miss rate and the cut is the strictest one
            (every abnormal study caught, or no normal study above ``high``).
        fitted_on: where the studies came from, in words.
        collapsed: True when the targets were met at once and the doubt band is empty.
    """

    low: float
    high: float
    target_sensitivity: float
    target_specificity: float
    sensitivity_at_low: float
    specificity_at_low: float
    sensitivity_at_high: float
    specificity_at_high: float
    n_abnormal: int
    n_normal: int
    resolvable: bool
    fitted_on: str
    collapsed: bool = False


def _check_target(name: str, value: float) -> float:
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must be between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _rates(y: np.ndarray, p: np.ndarray, cut: float) -> tuple[float, float]:
    """(sensitivity, specificity) when ``p >= cut`` is called abnormal."""
    called = p >= cut
    return float(called[y == 1].mean()), float((~called[y == 0]).mean())


def choose_decision_points(y_true: ArrayLike, y_prob: ArrayLike, *, threshold: float, fitted_on: str,
                           target_sensitivity: float = 0.95, target_specificity: float = 0.95) -> DecisionPoints:
    """Choose the high-sensitivity and high-specificity cuts on study labels and probabilities.

    Each cut sits midway in the gap between the two distinct probabilities around it, and the
    band is widened if needed to contain ``threshold`` (the single decision threshold): a study
    the single threshold calls normal is never *abnormal*, and vice versa. When the two cuts
    cross (both targets met at once) they collapse onto ``threshold``, clipped into the overlap.

    Raises:
        ConfigError: a target outside (0, 1).
        DatasetError: invalid inputs, one class only, or fewer than
            :data:`MIN_STUDIES_PER_CLASS` studies of a class.
    """
    t_sens = _check_target("target sensitivity", target_sensitivity)
    t_spec = _check_target("target specificity", target_specificity)
    pts = operating_points(y_true, y_prob)  # validates the inputs
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    if pts.n_positive == 0 or pts.n_negative == 0:
        present = "abnormal (1)" if pts.n_positive else "normal (0)"
        raise DatasetError(f"cannot choose operating points on one class only: every label is {present}; "
                           "the data need both normal and abnormal studies")
    for count, cls_name, target, what in ((pts.n_positive, "abnormal", t_sens, "sensitivity"),
                                          (pts.n_negative, "normal", t_spec, "specificity")):
        if count < MIN_STUDIES_PER_CLASS:
            raise DatasetError(
                f"too few studies for the {what} {target:g} operating point: {count} {cls_name} "
                f"studies, at least {MIN_STUDIES_PER_CLASS} needed (more than {math.ceil(1 / (1 - target))} "
                "to measure the target in steps finer than the allowed miss rate)")
    # Sensitivity only falls as the cut rises and specificity only rises; the candidates are the
    # distinct probabilities, highest first.
    sens_ok = np.flatnonzero(pts.tp / pts.n_positive >= t_sens - _TOLERANCE)
    spec_ok = np.flatnonzero(1.0 - pts.fp / pts.n_negative >= t_spec - _TOLERANCE)
    low = gap_middle(pts.thresholds, int(sens_ok[0]))  # the most specific cut meeting the sensitivity
    # The most sensitive cut meeting the specificity; if even the top score fails it, call nothing abnormal.
    high = gap_middle(pts.thresholds, int(spec_ok[-1])) if spec_ok.size else float(np.nextafter(pts.thresholds[0], np.inf))
    collapsed = low >= high
    if collapsed:
        low = high = float(min(max(threshold, high), low))
    # The single threshold lies in the doubt band, so "abnormal" and "normal" never contradict
    # the single-threshold decision; the band only takes studies near it out of the confident answers.
    low, high = min(low, float(threshold)), max(high, float(threshold))
    sens_low, spec_low = _rates(y, p, low)
    sens_high, spec_high = _rates(y, p, high)
    resolvable = (pts.n_positive >= 1 / (1 - t_sens) - _TOLERANCE
                  and pts.n_negative >= 1 / (1 - t_spec) - _TOLERANCE)
    return DecisionPoints(low, high, t_sens, t_spec, sens_low, spec_low, sens_high, spec_high,
                          pts.n_positive, pts.n_negative, bool(resolvable), fitted_on, collapsed)
