"""Calibration: does a predicted 0.8 mean "abnormal 80% of the time"?

The reliability curve bins predictions by probability and compares, per bin, the mean predicted
probability with the observed fraction of abnormal cases. The expected calibration error (ECE) is
the count-weighted mean absolute gap between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fracturescan.errors import ConfigError
from fracturescan.evaluation.metrics import validate_binary_inputs

__all__ = ["BIN_STRATEGIES", "ReliabilityCurve", "expected_calibration_error", "reliability_curve"]

#: ``uniform``: equal-width bins on [0, 1]; ``quantile``: bins holding equal numbers of cases.
BIN_STRATEGIES: tuple[str, ...] = ("uniform", "quantile")


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration statistics; only bins holding at least one prediction are listed.

    Attributes:
        bin_edges: all ``n_bins + 1`` edges (quantile edges may repeat when many values tie).
        mean_predicted: mean predicted probability in each non-empty bin.
        fraction_positive: observed fraction of abnormal cases in each non-empty bin.
        counts: number of predictions in each non-empty bin.
        bin_index: which bin (0-based, into ``bin_edges``) each listed row is.
    """

    bin_edges: np.ndarray
    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    counts: np.ndarray
    bin_index: np.ndarray

    @property
    def n(self) -> int:
        """Total number of predictions."""
        return int(self.counts.sum())


def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Edges for equal-width or equal-count bins."""
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.percentile(p, np.linspace(0.0, 100.0, n_bins + 1))


def reliability_curve(
    y_true: ArrayLike, y_prob: ArrayLike, *, n_bins: int = 10, strategy: str = "uniform"
) -> ReliabilityCurve:
    """Bin predictions and compare predicted with observed abnormality rates.

    A probability lying exactly on an inner edge goes to the lower bin, so the bins are
    ``[e0, e1], (e1, e2], ...`` (the same convention as scikit-learn's ``calibration_curve``).

    Raises:
        ConfigError: ``n_bins`` < 1 or an unknown ``strategy``.
        DatasetError: invalid labels or probabilities.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy not in BIN_STRATEGIES:
        raise ConfigError(f"unknown binning strategy {strategy!r}; choose one of {BIN_STRATEGIES}")
    y, p = validate_binary_inputs(y_true, y_prob)
    edges = _bin_edges(p, int(n_bins), strategy)
    which = np.searchsorted(edges[1:-1], p, side="left")
    counts = np.bincount(which, minlength=n_bins)
    prob_sum = np.bincount(which, weights=p, minlength=n_bins)
    pos_sum = np.bincount(which, weights=y, minlength=n_bins)
    filled = np.flatnonzero(counts > 0)
    return ReliabilityCurve(
        bin_edges=edges,
        mean_predicted=prob_sum[filled] / counts[filled],
        fraction_positive=pos_sum[filled] / counts[filled],
        counts=counts[filled],
        bin_index=filled,
    )


def expected_calibration_error(
    y_true: ArrayLike, y_prob: ArrayLike, *, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """Count-weighted mean of ``|fraction_positive - mean_predicted|`` over the bins.

    0 means perfectly calibrated on these bins; the value depends on the binning, so report the
    number of bins and strategy with it.
    """
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, strategy=strategy)
    gaps = np.abs(curve.fraction_positive - curve.mean_predicted)
    return float(np.sum(curve.counts * gaps) / curve.n)
