"""Binary classification metrics at image and study level.

Label 1 = abnormal (the positive class). A decision is ``prob >= threshold``. Every metric that is
undefined for the data at hand (AUC with one class, precision with no predicted positives, ...) is
``None`` rather than NaN, so the result can go straight into JSON.

A study's probability is the mean of its images' probabilities, as in the MURA paper
(Rajpurkar et al., 2017); :func:`aggregate_studies` does that aggregation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from fracturescan.decision import study_probabilities
from fracturescan.errors import ConfigError, DatasetError

__all__ = [
    "METRIC_KEYS",
    "SCALAR_METRICS",
    "StudyTable",
    "aggregate_studies",
    "binary_metrics",
    "group_codes",
    "validate_binary_inputs",
    "validate_threshold",
]

#: The scalar (non-count) metrics, the ones that get confidence intervals.
SCALAR_METRICS: tuple[str, ...] = (
    "accuracy",
    "auc",
    "average_precision",
    "precision",
    "recall",
    "specificity",
    "f1",
    "kappa",
    "brier",
)

#: Keys of the dict returned by :func:`binary_metrics`, in display order.
METRIC_KEYS: tuple[str, ...] = ("n", "n_positive", "tp", "fp", "tn", "fn") + SCALAR_METRICS


def validate_binary_inputs(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and probabilities and return them as 1-D ``int64`` / ``float64`` arrays.

    Raises:
        DatasetError: empty input, lengths differ, a label is not 0/1, or a probability is not a
            finite number in [0, 1].
    """
    labels = np.asarray(y_true)
    probs = np.asarray(y_prob, dtype=np.float64)
    if labels.ndim != 1 or probs.ndim != 1:
        raise DatasetError(
            f"labels and probabilities must be 1-D sequences, got shapes {labels.shape} and "
            f"{probs.shape}; pass one value per image (or per study)"
        )
    if labels.shape[0] != probs.shape[0]:
        raise DatasetError(
            f"got {labels.shape[0]} labels but {probs.shape[0]} probabilities; "
            "every prediction needs exactly one label"
        )
    if labels.shape[0] == 0:
        raise DatasetError("no predictions to evaluate: the label and probability lists are empty")
    try:
        numeric = labels.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"labels must be 0 (normal) or 1 (abnormal), got {labels[:5]!r}"
        ) from exc
    bad = ~np.isin(numeric, (0.0, 1.0))
    if bad.any():
        raise DatasetError(
            f"labels must be 0 (normal) or 1 (abnormal); found {numeric[bad][:5].tolist()} "
            f"at positions {np.flatnonzero(bad)[:5].tolist()}"
        )
    bad = ~np.isfinite(probs) | (probs < 0.0) | (probs > 1.0)
    if bad.any():
        raise DatasetError(
            f"probabilities must be finite numbers in [0, 1]; found {probs[bad][:5].tolist()} "
            f"at positions {np.flatnonzero(bad)[:5].tolist()} (apply a sigmoid to logits first)"
        )
    return numeric.astype(np.int64), probs


def validate_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise :class:`ConfigError` if it is not in [0, 1]."""
    value = float(threshold)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"decision threshold must be a number in [0, 1], got {threshold!r}")
    return value


def _ratio(num: float, den: float) -> float | None:
    """``num / den`` or ``None`` when the denominator is zero (metric undefined)."""
    return None if den == 0 else float(num) / float(den)


def _kappa(y: np.ndarray, pred: np.ndarray) -> float | None:
    """Cohen's kappa (scikit-learn); ``None`` when chance agreement is total (one class, all
    decisions equal), where kappa is 0/0."""
    with warnings.catch_warnings():  # the undefined case warns (and gives NaN): we say None instead
        warnings.simplefilter("ignore")
        value = float(skm.cohen_kappa_score(y, pred, labels=[0, 1]))
    return value if math.isfinite(value) else None


def binary_metrics(
    y_true: ArrayLike, y_prob: ArrayLike, threshold: float
) -> dict[str, float | int | None]:
    """Confusion counts and the usual scores for decisions ``prob >= threshold`` (confusion
    matrix, ROC AUC, average precision and kappa from scikit-learn).

    Returns a dict with the keys of :data:`METRIC_KEYS`. ``recall`` is sensitivity; ``auc`` and
    ``average_precision`` do not depend on the threshold; ``brier`` is the mean squared error of
    the probabilities. Undefined values are ``None``.
    """
    y, p = validate_binary_inputs(y_true, y_prob)
    t = validate_threshold(threshold)
    pred = (p >= t).astype(np.int64)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    n = y.shape[0]
    n_pos = tp + fn
    return {
        "n": n,
        "n_positive": n_pos,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / n,
        # Undefined with one class (AUC) or no positives (AP): None, not scikit-learn's warning + NaN.
        "auc": float(skm.roc_auc_score(y, p)) if 0 < n_pos < n else None,
        "average_precision": float(skm.average_precision_score(y, p)) if n_pos > 0 else None,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "kappa": _kappa(y, pred),
        "brier": float(np.mean((p - y) ** 2)),
    }


@dataclass(frozen=True)
class StudyTable:
    """Study-level predictions, one row per study in order of first appearance.

    Attributes:
        study_ids: study keys (object array of str).
        y_true: study labels (0/1).
        y_prob: mean of the study's image probabilities.
        n_images: how many images each study has.
        image_index: for every input image, the row of its study in this table.
    """

    study_ids: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray
    n_images: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        """Number of studies."""
        return int(self.study_ids.shape[0])


def group_codes(keys: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number keys 0..G-1 in order of first appearance.

    Keys are compared as strings. Returns (group number per item, the distinct keys in order).
    """
    arr = np.asarray([str(k) for k in keys], dtype=object)
    uniq, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    # np.unique sorts; renumber groups so that group 0 is the first one met in the input.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return rank[inverse.reshape(-1)], uniq[order]


def aggregate_studies(
    study_ids: Sequence[Any] | np.ndarray, y_true: ArrayLike, y_prob: ArrayLike
) -> StudyTable:
    """Average image probabilities per study (the MURA study-level prediction).

    Raises:
        DatasetError: invalid inputs, or images of one study carry different labels (a study's
            label is shared by all its images, so this means the index is corrupt).
    """
    y, p = validate_binary_inputs(y_true, y_prob)
    if len(study_ids) != y.shape[0]:
        raise DatasetError(
            f"got {len(study_ids)} study ids for {y.shape[0]} images; pass one study id per image"
        )
    index, ids = group_codes(study_ids)
    n_groups = ids.shape[0]
    counts = np.bincount(index, minlength=n_groups)
    positives = np.bincount(index, weights=y, minlength=n_groups)
    mixed = (positives != 0) & (positives != counts)
    if mixed.any():
        raise DatasetError(
            f"{int(mixed.sum())} studies have images with different labels, e.g. "
            f"{ids[mixed][:3].tolist()}; a study's label must be the same for all its images"
        )
    return StudyTable(
        study_ids=ids,
        y_true=(positives > 0).astype(np.int64),
        y_prob=study_probabilities(index, p, n_groups),
        n_images=counts.astype(np.int64),
        image_index=index.astype(np.int64),
    )
