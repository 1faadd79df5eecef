"""The two operating points, checked against a brute-force scan of every cut."""

from __future__ import annotations

import numpy as np
import pytest

from fracturescan.errors import ConfigError, DatasetError
from fracturescan.evaluation.operating import MIN_STUDIES_PER_CLASS, DecisionPoints, choose_decision_points


def _brute(y: np.ndarray, p: np.ndarray, t_sens: float, t_spec: float) -> tuple[float, float]:
    """Scan every distinct score as a cut, then move each chosen cut to the middle of its gap."""
    cuts = np.unique(p)
    sens = np.array([(p[y == 1] >= c).mean() for c in cuts])
    spec = np.array([(p[y == 0] < c).mean() for c in cuts])
    low, high = cuts[sens >= t_sens].max(), cuts[spec >= t_spec].min()
    below = lambda c: cuts[cuts < c].max() if (cuts < c).any() else c  # noqa: E731
    return (low + below(low)) / 2, (high + below(high)) / 2


@pytest.mark.parametrize("seed", range(5))
def test_cuts_match_a_brute_force_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(3)  # overlapping classes, ties
    low, high = _brute(y, p, 0.9, 0.95)
    threshold = (low + high) / 2
    pts = choose_decision_points(y, p, threshold=threshold, fitted_on="sim", target_sensitivity=0.9,
                                 target_specificity=0.95)
    assert (pts.low, pts.high) == pytest.approx((low, high)) and not pts.collapsed and pts.low <= pts.high
    assert pts.sensitivity_at_low == pytest.approx((p[y == 1] >= low).mean()) and pts.sensitivity_at_low >= 0.9
    assert pts.specificity_at_high == pytest.approx((p[y == 0] < high).mean()) and pts.specificity_at_high >= 0.95
    assert pts.resolvable
    assert DecisionPoints.from_dict(pts.to_dict()) == pts


def test_the_band_always_holds_the_single_threshold() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 200)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    for threshold in (0.05, 0.5, 0.95):
        pts = choose_decision_points(y, p, threshold=threshold, fitted_on="sim")
        assert pts.low <= threshold <= pts.high
    wide = choose_decision_points(y, p, threshold=0.5, fitted_on="sim")
    assert (wide.low, wide.high) == pytest.approx(_brute(y, p, 0.95, 0.95))


def test_separable_classes_collapse_onto_the_single_threshold() -> None:
    y = np.array([0] * 30 + [1] * 30)
    p = np.r_[np.linspace(0.0, 0.3, 30), np.linspace(0.7, 1.0, 30)]
    pts = choose_decision_points(y, p, threshold=0.5, fitted_on="sim")
    assert pts.collapsed and pts.low == pts.high == 0.5
    assert pts.sensitivity_at_low == 1.0 and pts.specificity_at_high == 1.0


def test_few_studies_give_the_strictest_cut_and_say_so() -> None:
    y = np.array([0] * 8 + [1] * 6)
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.45, 0.55, 0.65, 0.8, 0.9, 0.95])
    pts = choose_decision_points(y, p, threshold=0.5, fitted_on="sim")
    assert not pts.resolvable
    assert pts.low == pytest.approx(0.425) and pts.sensitivity_at_low == 1.0  # every abnormal study caught
    assert pts.high == pytest.approx(0.75) and pts.specificity_at_high == 1.0  # no normal study above


def test_too_few_studies_and_bad_targets_get_one_line_errors() -> None:
    y = np.array([0] * 10 + [1] * (MIN_STUDIES_PER_CLASS - 1))
    p = np.linspace(0, 1, len(y))
    with pytest.raises(DatasetError, match=r"too few studies for the sensitivity 0.95 operating point: 4 abnormal"):
        choose_decision_points(y, p, threshold=0.5, fitted_on="sim")
    with pytest.raises(DatasetError, match="one class only"):
        choose_decision_points([1] * 10, np.linspace(0, 1, 10), threshold=0.5, fitted_on="sim")
    with pytest.raises(ConfigError, match="target specificity"):
        choose_decision_points([0, 1] * 10, np.linspace(0, 1, 20), threshold=0.5, fitted_on="sim",
                               target_specificity=1.0)
