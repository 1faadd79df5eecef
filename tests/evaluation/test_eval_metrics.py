"""binary_metrics and aggregate_studies against direct computations, scikit-learn, hand computation and groupby."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from sklearn import metrics as skm

from fracturescan.errors import ConfigError, DatasetError
from fracturescan.evaluation.metrics import METRIC_KEYS, aggregate_studies, binary_metrics


def _random_case(seed: int, n: int = 400, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, (np.round(p, 1) if ties else p)


def _pairwise_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Share of (abnormal, normal) pairs ranked correctly, ties counting one half."""
    diff = p[y == 1][:, None] - p[y == 0][None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _stepwise_ap(y: np.ndarray, p: np.ndarray) -> float:
    """Sum over each distinct score, highest first, of (recall gained) x (precision there)."""
    ap, last_recall = 0.0, 0.0
    for t in sorted(set(p.tolist()), reverse=True):
        called = p >= t
        recall = float((called & (y == 1)).sum() / (y == 1).sum())
        ap += (recall - last_recall) * float((called & (y == 1)).sum() / called.sum())
        last_recall = recall
    return ap


def _kappa_from_counts(tp: int, fp: int, tn: int, fn: int) -> float:
    n = tp + fp + tn + fn
    observed, expected = (tp + tn) / n, ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    return (observed - expected) / (1 - expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.62])
@pytest.mark.parametrize("ties", [False, True])
def test_every_metric_matches_an_independent_computation(seed: int, threshold: float, ties: bool) -> None:
    # AUC, AP, kappa and the confusion matrix come from scikit-learn, so they are checked against
    # direct computations here; the ratios, computed by hand in the library, against scikit-learn.
    y, p = _random_case(seed, ties=ties)
    pred = (p >= threshold).astype(int)
    m = binary_metrics(y, p, threshold)
    tp, fp = int(sum(a == 1 and b == 1 for a, b in zip(y, pred))), int(sum(a == 0 and b == 1 for a, b in zip(y, pred)))
    tn, fn = int(sum(a == 0 and b == 0 for a, b in zip(y, pred))), int(sum(a == 1 and b == 0 for a, b in zip(y, pred)))
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["n"] == len(y) and m["n_positive"] == y.sum()
    assert m["auc"] == pytest.approx(_pairwise_auc(y, p), abs=1e-12)
    assert m["average_precision"] == pytest.approx(_stepwise_ap(y, p), abs=1e-12)
    assert m["kappa"] == pytest.approx(_kappa_from_counts(tp, fp, tn, fn), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert list(m) == list(METRIC_KEYS)


def test_hand_computed_case() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [0.9, 0.4, 0.35, 0.8, 0.7, 0.1]
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    for key in ("precision", "recall", "specificity", "f1"):
        assert m[key] == pytest.approx(2 / 3)
    assert m["kappa"] == pytest.approx(1 / 3)  # po = 2/3, pe = 1/2
    assert m["auc"] == pytest.approx(7 / 9)  # 7 of 9 positive-negative pairs ordered correctly
    assert m["average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.1225 + 0.64 + 0.09 + 0.01) / 6)


def test_threshold_is_inclusive() -> None:
    m = binary_metrics([1, 0], [0.5, 0.49], 0.5)
    assert m["tp"] == 1 and m["fp"] == 0 and m["tn"] == 1


def test_one_class_gives_none_not_nan() -> None:
    m = binary_metrics([1, 1, 1], [0.9, 0.8, 0.7], 0.5)
    assert m["auc"] is None and m["specificity"] is None and m["kappa"] is None
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["f1"] == 1.0
    json.dumps(m, allow_nan=False)  # must not raise


def test_no_predicted_positive_gives_none_precision() -> None:
    m = binary_metrics([1, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.9)
    assert m["precision"] is None
    assert m["recall"] == 0.0 and m["f1"] == 0.0 and m["kappa"] == pytest.approx(0.0)
    negatives_only = binary_metrics([0, 0], [0.1, 0.2], 0.9)
    assert negatives_only["recall"] is None and negatives_only["f1"] is None
    assert negatives_only["average_precision"] is None
    json.dumps(negatives_only, allow_nan=False)


@pytest.mark.parametrize(
    ("y", "p", "error"),
    [
        ([0, 1], [0.5], DatasetError),
        ([0, 2], [0.5, 0.5], DatasetError),
        ([0, 1], [0.5, 1.2], DatasetError),
        ([0, 1], [0.5, float("nan")], DatasetError),
        ([], [], DatasetError),
        (["a", "b"], [0.5, 0.5], DatasetError),
    ],
)
def test_invalid_inputs_raise_clear_errors(y: list, p: list, error: type) -> None:
    with pytest.raises(error):
        binary_metrics(y, p, 0.5)


def test_invalid_threshold() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        binary_metrics([0, 1], [0.2, 0.8], 1.5)


def test_aggregate_studies_matches_manual_groupby() -> None:
    rng = np.random.default_rng(7)
    n_studies = 50
    study_label = rng.integers(0, 2, n_studies)
    ids = np.repeat([f"s{i:03d}" for i in range(n_studies)], rng.integers(1, 5, n_studies))
    rng.shuffle(ids)  # interleave studies: order of first appearance must still be kept
    labels = np.array([study_label[int(s[1:])] for s in ids])
    probs = rng.random(len(ids))
    table = aggregate_studies(list(ids), labels, probs)

    groups: dict[str, list[float]] = defaultdict(list)
    for sid, prob in zip(ids, probs):
        groups[sid].append(prob)  # dicts keep insertion (= first appearance) order
    assert table.study_ids.tolist() == list(groups)
    np.testing.assert_allclose(table.y_prob, [np.mean(v) for v in groups.values()], rtol=1e-12)
    assert table.y_true.tolist() == [study_label[int(s[1:])] for s in groups]
    assert table.n_images.tolist() == [len(v) for v in groups.values()]
    assert len(table) == len(groups)
    assert (table.study_ids[table.image_index] == ids).all()


def test_aggregate_studies_rejects_mixed_labels() -> None:
    with pytest.raises(DatasetError, match="different labels"):
        aggregate_studies(["a", "a", "b"], [1, 0, 1], [0.1, 0.2, 0.3])


def test_aggregate_studies_length_mismatch() -> None:
    with pytest.raises(DatasetError, match="study ids"):
        aggregate_studies(["a"], [1, 0], [0.1, 0.2])
