"""Temperature scaling: the fitted T against a known answer and a brute-force search."""

from __future__ import annotations

import numpy as np
import pytest

from fracturescan.errors import DatasetError
from fracturescan.evaluation.calibration import expected_calibration_error
from fracturescan.evaluation.temperature import (Calibration, apply_temperature, fit_temperature,
                                                 logits_from_probabilities, nll, platt_targets)


def _overconfident(n: int, factor: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), reported as logits factor * z (factor > 1: overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return factor * z, y


def test_recovers_the_known_temperature() -> None:
    logits, y = _overconfident(20000, 3.0)
    cal = fit_temperature(logits, y, fitted_on="simulation")
    assert cal.temperature == pytest.approx(3.0, rel=0.05)
    assert cal.nll_after < cal.nll_before
    assert cal.n_images == 20000 and cal.n_abnormal_images == int(y.sum())


def test_matches_a_brute_force_search_and_improves_ece() -> None:
    logits, y = _overconfident(400, 0.4, seed=3)  # underconfident this time
    cal = fit_temperature(logits, y, fitted_on="simulation")
    grid = np.exp(np.linspace(-3, 3, 6001))
    best = grid[np.argmin([nll(logits, platt_targets(y), t) for t in grid])]
    assert cal.temperature == pytest.approx(best, rel=2e-3)
    before = expected_calibration_error(y, apply_temperature(logits))
    after = expected_calibration_error(y, apply_temperature(logits, cal.temperature))
    assert after <= before


def test_scaling_is_kept_only_when_it_wins_on_held_out_studies() -> None:
    kept_identity = 0
    for seed in range(8):
        logits, y = _overconfident(60, 1.0, seed=seed)  # already calibrated: any T != 1 is noise
        cal = fit_temperature(logits, y, fitted_on="simulation", study_ids=np.arange(60) // 2)
        assert (cal.temperature != 1.0) == (cal.cv_nll_scaled < cal.cv_nll_identity)
        kept_identity += cal.temperature == 1.0
        assert cal.nll_after == pytest.approx(nll(logits, y, cal.temperature))
    assert kept_identity >= 1  # noise alone does not always earn a temperature


def test_a_separable_hold_out_does_not_drive_probabilities_to_0_and_1() -> None:
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(40, int), np.ones(30, int)]
    logits = np.where(y == 1, rng.uniform(2, 9, 70), rng.uniform(-9, -2, 70))  # perfectly separated
    grid = np.exp(np.linspace(-4, 4, 8001))
    plain = grid[np.argmin([nll(logits, y, t) for t in grid])]
    assert plain == grid[0]  # plain 0/1 targets: T collapses to the search bound
    cal = fit_temperature(logits, y, fitted_on="simulation", study_ids=np.arange(70))
    smoothed = grid[np.argmin([nll(logits, platt_targets(y), t) for t in grid])]
    assert cal.temperature in (1.0, pytest.approx(smoothed, rel=2e-3))
    p = apply_temperature(logits, cal.temperature)
    assert 1e-6 < p.min() and p.max() < 1 - 1e-6


def test_nll_and_sigmoid_agree_with_direct_formulas() -> None:
    z = np.array([-30.0, -1.0, 0.0, 2.5, 40.0])
    y = np.array([0, 1, 1, 0, 1])
    p = 1 / (1 + np.exp(-z / 2))
    assert np.allclose(apply_temperature(z, 2.0), p)
    direct = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    assert nll(z, y, 2.0) == pytest.approx(direct, rel=1e-9)
    assert np.allclose(logits_from_probabilities(apply_temperature([-3.0, 0.5])), [-3.0, 0.5])


def test_round_trips_through_a_dict() -> None:
    cal = fit_temperature([-2.0, -1.0, 1.0, 3.0], [0, 1, 0, 1], fitted_on="x", study_ids=["a", "a", "b", "c"])
    assert cal.n_studies == 3
    assert Calibration.from_dict({**cal.to_dict(), "future_field": 1}) == cal


@pytest.mark.parametrize("logits, labels, message", [
    ([0.1, 0.2, 0.3], [1, 1, 1], "one class only"),
    ([0.1, 0.2], [0, 1, 1], "2 images but 3 labels"),
    ([0.1, np.nan], [0, 1], "finite"),
    ([0.1, 0.2], [0, 2], "must be 0"),
    ([], [], "none"),
])
def test_bad_calibration_data_get_one_line_errors(logits, labels, message) -> None:
    with pytest.raises(DatasetError, match=message) as err:
        fit_temperature(logits, labels, fitted_on="x")
    assert "\n" not in str(err.value)
