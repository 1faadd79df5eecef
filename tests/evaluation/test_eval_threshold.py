"""choose_threshold against brute force over every candidate threshold, and where in the gap it
puts the value."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fracturescan.errors import ConfigError, DatasetError
from fracturescan.evaluation.threshold import choose_threshold


def _case(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    return y, np.round(p, 2)  # rounding creates ties, as real float32 outputs do


def _rates(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    pred = (p >= t).astype(int)
    return skm.recall_score(y, pred), skm.recall_score(y, pred, pos_label=0)


def _in_gap_below(candidate: float, p: np.ndarray, value: float) -> None:
    """``value`` is the midpoint between ``candidate`` and the next lower distinct probability,
    so it calls exactly the images ``candidate`` calls."""
    lower = np.unique(p)[np.unique(p) < candidate]
    if lower.size == 0:
        assert value == candidate
        return
    assert value == pytest.approx((candidate + lower.max()) / 2, rel=1e-12)
    assert lower.max() < value < candidate
    assert np.array_equal(p >= value, p >= candidate)


@pytest.mark.parametrize("seed", range(5))
def test_f1_is_brute_force_optimum(seed: int) -> None:
    y, p = _case(seed)
    candidates = np.unique(p)
    scores = np.array([skm.f1_score(y, (p >= t).astype(int)) for t in candidates])
    choice = choose_threshold(y, p, "f1")
    assert choice.metric == pytest.approx(scores.max())
    best = candidates[np.isclose(scores, scores.max(), rtol=1e-12, atol=0)]
    _in_gap_below(best.max(), p, choice.value)  # ties go to the highest candidate
    assert choice.method == "f1" and choice.metric_name == "f1"
    sens, spec = _rates(y, p, choice.value)
    assert (choice.sensitivity, choice.specificity) == pytest.approx((sens, spec))


@pytest.mark.parametrize("seed", range(5))
def test_youden_is_brute_force_optimum(seed: int) -> None:
    y, p = _case(seed)
    candidates = np.unique(p)
    j = np.array([sum(_rates(y, p, t)) - 1 for t in candidates])
    choice = choose_threshold(y, p, "youden")
    assert choice.metric == pytest.approx(j.max())
    _in_gap_below(candidates[np.isclose(j, j.max(), rtol=0, atol=1e-12)].max(), p, choice.value)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_sensitivity_target_met_by_highest_threshold(target: float) -> None:
    y, p = _case(1)
    choice = choose_threshold(y, p, "sensitivity", target_sensitivity=target)
    assert _rates(y, p, choice.value)[0] >= target
    # the most specific candidate meeting the target, and the threshold in the gap below it
    candidate = np.unique(p)[np.unique(p) >= choice.value].min()
    _in_gap_below(candidate, p, choice.value)
    higher = np.unique(p)[np.unique(p) > candidate]
    assert all(_rates(y, p, t)[0] < target for t in higher)
    assert choice.metric == pytest.approx(_rates(y, p, choice.value)[0])
    assert choice.target_sensitivity == target


def test_exact_fraction_target_is_met() -> None:
    y = np.array([1] * 10 + [0] * 10)
    p = np.linspace(0.05, 1.0, 20)[::-1]  # positives score highest
    choice = choose_threshold(y, p, "sensitivity", target_sensitivity=0.9)
    assert choice.sensitivity == pytest.approx(0.9)  # 9/10 meets 0.9 despite float rounding
    _in_gap_below(p[8], p, choice.value)


def test_perfect_separation() -> None:
    choice = choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9], "f1")
    assert choice.value == pytest.approx(0.45, rel=1e-12) and choice.metric == 1.0  # halfway from 0.3 to 0.6
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9], "youden").metric == 1.0


def test_unknown_method() -> None:
    with pytest.raises(ConfigError, match="unknown threshold method"):
        choose_threshold([0, 1], [0.2, 0.8], "accuracy")


@pytest.mark.parametrize(
    ("method", "target"),
    [("sensitivity", None), ("sensitivity", 0.0), ("sensitivity", 1.5), ("f1", 0.9)],
)
def test_bad_target(method: str, target: float | None) -> None:
    with pytest.raises(ConfigError):
        choose_threshold([0, 1], [0.2, 0.8], method, target_sensitivity=target)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_raises_dataset_error(label: int) -> None:
    with pytest.raises(DatasetError, match="both"):
        choose_threshold([label] * 5, [0.1, 0.2, 0.3, 0.4, 0.5])


def test_saturated_probabilities_keep_the_threshold_inside_the_gap() -> None:
    # float32 outputs of 0.0 and 1.0: the threshold still separates them
    y, p = np.array([0, 0, 1, 1]), np.array([0.0, 0.0, 1.0, 1.0])
    choice = choose_threshold(y, p, "f1")
    assert choice.value == 0.5 and choice.sensitivity == choice.specificity == 1.0
    assert np.array_equal(p >= choice.value, y == 1)
    # adjacent floats leave no room between them: the candidate itself (the midpoint would round
    # onto one end, and onto the lower one it would call the normal image abnormal)
    high = 0.5
    low = np.nextafter(high, 0.0)
    assert choose_threshold([0, 1], [low, high], "f1").value == high
