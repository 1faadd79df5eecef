"""Group bootstrap: exactness of the vectorised replicates and statistical properties."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fracturescan.errors import ConfigError
from fracturescan.evaluation.bootstrap import (
    bootstrap_ci,
    bootstrap_replicates,
    group_resample_counts,
)
from fracturescan.evaluation.metrics import SCALAR_METRICS, binary_metrics


def _studies(n_studies: int, seed: int, spread: float = 0.15) -> tuple[np.ndarray, ...]:
    """Fake MURA-like data: 1-4 images per study, images share their study's label."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_studies)
    study_label = rng.random(n_studies) < 0.4
    groups = np.repeat(np.arange(n_studies), sizes)
    y = study_label[groups].astype(int)
    study_effect = rng.normal(0, spread, n_studies)[groups]
    p = np.clip(0.3 + 0.35 * y + study_effect + rng.normal(0, 0.12, len(y)), 0, 1)
    return np.array([f"study{g}" for g in groups]), y, p


def test_replicates_equal_metrics_on_explicitly_resampled_data() -> None:
    groups, y, p = _studies(40, seed=1)
    p = np.round(p, 1)  # ties exercise the tie handling of AUC and AP
    _, index = np.unique(groups, return_inverse=True)
    counts = group_resample_counts(index, 25, np.random.default_rng(3))
    reps = bootstrap_replicates(y, p, 0.5, counts)
    for row in range(counts.shape[0]):
        expected = binary_metrics(np.repeat(y, counts[row]), np.repeat(p, counts[row]), 0.5)
        for name in SCALAR_METRICS:
            if expected[name] is None:
                assert np.isnan(reps[name][row]), name
            else:
                assert reps[name][row] == pytest.approx(expected[name], abs=1e-12), name


def test_undefined_metric_is_nan_in_replicate() -> None:
    counts = np.array([[2, 0, 1], [1, 1, 1]])  # first resample drops the only negative
    reps = bootstrap_replicates([1, 0, 1], [0.9, 0.2, 0.6], 0.5, counts)
    assert np.isnan(reps["auc"][0]) and np.isnan(reps["specificity"][0])
    assert reps["auc"][1] == 1.0


def test_group_resampling_keeps_groups_whole() -> None:
    groups = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4])
    counts = group_resample_counts(groups, 500, np.random.default_rng(0))
    assert counts.shape == (500, len(groups))
    for g in np.unique(groups):
        members = counts[:, groups == g]
        assert (members == members[:, :1]).all()  # same multiplicity for all items of a group
    per_group = counts[:, [0, 3, 4, 6, 7]]
    assert (per_group.sum(axis=1) == 5).all()  # each resample draws exactly G groups
    assert per_group.mean() == pytest.approx(1.0, abs=0.05)


def test_interval_contains_point_estimate_on_big_sample() -> None:
    groups, y, p = _studies(1000, seed=2)
    point = binary_metrics(y, p, 0.5)
    ci = bootstrap_ci(y, p, 0.5, groups, n_boot=400, seed=0)
    assert set(ci) == set(SCALAR_METRICS)
    for name in SCALAR_METRICS:
        low, high = ci[name]
        assert low < point[name] < high, name
        assert high - low < 0.1, name


def test_interval_narrows_with_more_data() -> None:
    small = _studies(60, seed=3)
    large = _studies(2000, seed=3)
    ci_small = bootstrap_ci(small[1], small[2], 0.5, small[0], n_boot=300, seed=0)
    ci_large = bootstrap_ci(large[1], large[2], 0.5, large[0], n_boot=300, seed=0)
    for name in ("accuracy", "auc", "kappa", "f1"):
        width_small = ci_small[name][1] - ci_small[name][0]
        width_large = ci_large[name][1] - ci_large[name][0]
        assert width_large < 0.5 * width_small, name


def test_same_seed_same_result_and_seed_matters() -> None:
    groups, y, p = _studies(200, seed=4)
    first = bootstrap_ci(y, p, 0.5, groups, n_boot=200, seed=11)
    again = bootstrap_ci(y, p, 0.5, groups, n_boot=200, seed=11)
    other = bootstrap_ci(y, p, 0.5, groups, n_boot=200, seed=12)
    assert first == again
    assert first != other


def test_grouping_widens_interval_for_duplicated_images() -> None:
    # Each study holds 4 identical images: the effective sample size is the number of studies,
    # so resampling images independently would give intervals about half as wide.
    rng = np.random.default_rng(5)
    y_s = rng.integers(0, 2, 150)
    p_s = np.clip(0.3 + 0.3 * y_s + rng.normal(0, 0.2, 150), 0, 1)
    y, p = np.repeat(y_s, 4), np.repeat(p_s, 4)
    groups = np.repeat(np.arange(150), 4)
    grouped = bootstrap_ci(y, p, 0.5, groups, n_boot=500, seed=0)
    independent = bootstrap_ci(y, p, 0.5, None, n_boot=500, seed=0)
    for name in ("accuracy", "auc"):
        w_grouped = grouped[name][1] - grouped[name][0]
        w_indep = independent[name][1] - independent[name][0]
        assert w_grouped > 1.5 * w_indep, name


def test_metric_undefined_everywhere_gives_none() -> None:
    ci = bootstrap_ci([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.2], 0.5, None, n_boot=50)
    assert ci["auc"] is None and ci["specificity"] is None
    assert ci["recall"] is not None


def test_thousand_resamples_on_three_thousand_images_is_fast() -> None:
    groups, y, p = _studies(1200, seed=6)
    assert len(y) > 2800
    start = time.perf_counter()
    bootstrap_ci(y, p, 0.5, groups, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 6.0  # typically < 1 s; generous for a busy 2-core CI


@pytest.mark.parametrize(("n_boot", "alpha"), [(0, 0.05), (10, 0.0), (10, 1.5)])
def test_bad_options(n_boot: int, alpha: float) -> None:
    with pytest.raises(ConfigError):
        bootstrap_ci([0, 1], [0.2, 0.8], 0.5, None, n_boot=n_boot, alpha=alpha)
