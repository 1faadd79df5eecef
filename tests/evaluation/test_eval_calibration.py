"""Reliability curve and expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from fracturescan.errors import ConfigError
from fracturescan.evaluation.calibration import expected_calibration_error, reliability_curve


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_matches_sklearn_calibration_curve(strategy: str, n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    p = rng.beta(2, 3, 500)
    y = (rng.random(500) < p**1.3).astype(int)
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    frac, mean = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(curve.fraction_positive, frac, rtol=1e-12)
    np.testing.assert_allclose(curve.mean_predicted, mean, rtol=1e-12)
    assert curve.n == 500 and (curve.counts > 0).all()


def test_ece_hand_computed() -> None:
    # bins [0, .5] and (.5, 1]: gaps |0.5 - 0.1| and |1.0 - 0.9|, each bin half the data
    ece = expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9], n_bins=2)
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_edge_value_goes_to_lower_bin() -> None:
    curve = reliability_curve([0, 1], [0.5, 0.51], n_bins=2)
    assert curve.bin_index.tolist() == [0, 1]


def test_calibrated_predictions_have_small_ece_and_biased_ones_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, p**3) > 0.15  # predictions systematically too low


@pytest.mark.parametrize(("n_bins", "strategy"), [(0, "uniform"), (10, "kmeans"), (2.5, "uniform")])
def test_bad_options(n_bins: int, strategy: str) -> None:
    with pytest.raises(ConfigError):
        reliability_curve([0, 1], [0.2, 0.8], n_bins=n_bins, strategy=strategy)
