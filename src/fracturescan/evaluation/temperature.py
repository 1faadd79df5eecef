"""Temperature scaling: one number that makes the model's probabilities mean what they say.

A network trained with (weighted) cross-entropy is usually over- or under-confident. Temperature
scaling divides every logit by one fitted ``T > 0`` before the sigmoid: ``p = sigmoid(z / T)``.
``T`` is chosen to minimise the negative log-likelihood of the labels on data the model did not
train on: the patient-level hold-out at the end of training (never MURA's ``valid`` split, the
test set), or a site's own labelled studies (``fracturescan calibrate``). Because ``T > 0`` the
ranking is unchanged, so AUC is untouched; only the probabilities move.

Images inherit their study's label, so the fit is on images; the study probability is then the
mean of the calibrated image probabilities (see :mod:`fracturescan.decision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from numpy.typing import ArrayLike

from fracturescan.errors import DatasetError
from fracturescan.records import StoredRecord

__all__ = ["Calibration", "apply_temperature", "fit_temperature", "logits_from_probabilities", "nll", "platt_targets"]

#: Folds (of whole studies) for checking that scaling helps on data it was not fitted on.
CV_FOLDS = 10
#: ``T`` is searched on this range of ``log T`` (T from about 0.02 to 55): wider than any sane
#: network needs, narrow enough that a separable hold-out cannot push T to zero.
_LOG_T_BOUNDS = (-4.0, 4.0)


@dataclass(frozen=True)
class Calibration(StoredRecord):
    """A fitted temperature and what it was fitted on (stored in ``metadata.json``).

    Attributes:
        temperature: ``T``; calibrated ``p = sigmoid(logit / T)``.
        fitted_on: where the labels came from, in words (e.g. ``patient-level hold-out``, or the
            data path and split of a local recalibration).
        n_images, n_studies, n_abnormal_images: how much data the fit saw.
        nll_before, nll_after: mean negative log-likelihood at ``T = 1`` and at the fitted ``T``.
        data_fingerprint: fingerprint of the records used (None when not known).
        fitted_at: UTC time of the fit (ISO 8601).
    """

    temperature: float
    fitted_on: str
    n_images: int
    n_studies: int
    n_abnormal_images: int
    nll_before: float
    nll_after: float
    data_fingerprint: str | None = None
    fitted_at: str = ""
    method: str = "temperature scaling"
    #: Mean NLL on held-out folds (grouped by study) with T fitted on the other folds, and with
    #: T = 1. Scaling is kept only when it wins there; otherwise ``temperature`` is 1.
    cv_nll_scaled: float | None = None
    cv_nll_identity: float | None = None


def logits_from_probabilities(probs: ArrayLike) -> np.ndarray:
    """``log(p / (1 - p))`` with probabilities clipped away from 0 and 1 (for old result files)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def apply_temperature(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(logits / temperature)`` (float64, overflow-safe)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    # 0.5 * (1 + tanh(z / 2)) is the sigmoid without exp overflow for large |z|.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def nll(logits: ArrayLike, y: ArrayLike, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of labels ``y`` under ``sigmoid(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(y, dtype=np.float64)
    # log(1 + exp(-|z|)) + max(z, 0) - y z  ==  -[y log p + (1 - y) log(1 - p)], stably.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _check(logits: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(y).reshape(-1)
    if z.shape != labels.shape:
        raise DatasetError(f"calibration data do not match: {z.size} images but {labels.size} labels")
    if z.size == 0:
        raise DatasetError("calibration needs labelled images, got none")
    if not np.all(np.isfinite(z)):
        raise DatasetError("calibration needs finite logits; some are NaN or infinite")
    if not np.isin(labels, (0, 1)).all():
        raise DatasetError("calibration labels must be 0 (normal) or 1 (abnormal)")
    labels = labels.astype(np.int64)
    if labels.min() == labels.max():
        present = "abnormal (1)" if labels[0] else "normal (0)"
        raise DatasetError(f"cannot calibrate on one class only: every label is {present}; "
                           "the calibration data need both normal and abnormal studies")
    return z, labels


def fit_temperature(logits: ArrayLike, y: ArrayLike, *, fitted_on: str, study_ids: ArrayLike | None = None,
                    data_fingerprint: str | None = None) -> Calibration:
    """Fit ``T`` minimising the mean cross-entropy of Platt's smoothed targets for ``y`` under
    ``sigmoid(logits / T)``, keeping it only when it also wins under cross-validation (judged by
    the NLL of the true labels).

    The loss is convex in ``1 / T`` for fixed logits, so a bounded scalar search on ``log T`` finds
    the global minimum. ``study_ids`` (one per image) make the cross-validation folds whole
    studies: the fitted ``T`` is kept when the mean held-out NLL with ``T`` refitted on the other
    folds beats ``T = 1``; otherwise the temperature is 1 (the raw probabilities are kept).

    Raises:
        DatasetError: lengths differ, no data, non-finite logits, labels not 0/1, or one class only.
    """
    z, labels = _check(logits, y)
    groups = np.asarray(study_ids if study_ids is not None else np.arange(z.size)).reshape(-1)
    if groups.size != z.size:
        raise DatasetError(f"calibration data do not match: {z.size} images but {groups.size} study ids")
    fitted = _best_temperature(z, labels)
    cv_scaled, cv_identity = _cross_validated(z, labels, groups)
    # A small or nearly separable hold-out can pull T away from 1 by chance; scaling is kept only
    # when it also lowers the NLL of studies it was not fitted on.
    temperature = fitted if cv_scaled is None or cv_scaled < cv_identity else 1.0
    return Calibration(
        temperature=temperature, fitted_on=fitted_on, n_images=int(z.size), n_studies=len(set(groups.tolist())),
        n_abnormal_images=int(labels.sum()), nll_before=nll(z, labels, 1.0),
        nll_after=nll(z, labels, temperature), data_fingerprint=data_fingerprint,
        fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        cv_nll_scaled=cv_scaled, cv_nll_identity=cv_identity,
    )


def platt_targets(labels: np.ndarray) -> np.ndarray:
    """Platt's (1999) smoothed targets: ``(N+ + 1) / (N+ + 2)`` for abnormal, ``1 / (N- + 2)`` for
    normal cases. With plain 0/1 targets a hold-out the model separates perfectly drives ``T``
    towards 0 (every probability 0 or 1); these keep the fit finite and honest about sample size."""
    n_pos = float(labels.sum())
    n_neg = float(labels.size - n_pos)
    return np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def _best_temperature(z: np.ndarray, labels: np.ndarray) -> float:
    """``T`` minimising the mean cross-entropy against :func:`platt_targets` (convex in ``1 / T``,
    so the bounded search finds the minimum)."""
    from scipy.optimize import minimize_scalar

    targets = platt_targets(labels)
    result = minimize_scalar(lambda log_t: nll(z, targets, math.exp(log_t)), bounds=_LOG_T_BOUNDS,
                             method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def _cross_validated(z: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                     folds: int = CV_FOLDS) -> tuple[float | None, float | None]:
    """(mean held-out NLL with T fitted on the other folds, the same with T = 1), folds made of
    whole studies; (None, None) when there are too few studies to hold any out."""
    names = np.unique(groups)
    if len(names) < 2:
        return None, None
    order = np.random.default_rng(0).permutation(len(names))
    fold_of = dict(zip(names[order], np.arange(len(names)) % min(folds, len(names))))
    fold = np.array([fold_of[g] for g in groups])
    scaled = identity = 0.0
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        if labels[train].min() == labels[train].max():  # one class left to fit on: no scaling
            t = 1.0
        else:
            t = _best_temperature(z[train], labels[train])
        scaled += nll(z[test], labels[test], t) * test.sum()
        identity += nll(z[test], labels[test], 1.0) * test.sum()
    return float(scaled / z.size), float(identity / z.size)
