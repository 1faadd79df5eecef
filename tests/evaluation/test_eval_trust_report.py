"""The report's decision-rule section, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from fracturescan.decision import DecisionRule, level_of
from fracturescan.evaluation.calibration import expected_calibration_error
from fracturescan.evaluation.metrics import aggregate_studies
from fracturescan.evaluation.operating import choose_decision_points
from fracturescan.evaluation.report_format import to_markdown
from fracturescan.evaluation.temperature import apply_temperature, fit_temperature
from fracturescan.evaluation.trust_report import _ece_weighted, decision_rule_blocks, decision_rule_metrics


def _study_data(n_studies: int, seed: int):
    """Overconfident logits: two images per study, one patient per two studies."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.5, n_studies)
    y = (rng.random(n_studies) < 1 / (1 + np.exp(-truth))).astype(int)
    studies = np.repeat([f"s{i}" for i in range(n_studies)], 2)
    patients = np.repeat([f"p{i // 2}" for i in range(n_studies)], 2)
    logits = 3.0 * (np.repeat(truth, 2) + rng.normal(0, 0.3, 2 * n_studies))
    return np.repeat(y, 2), logits, list(studies), list(patients)


def test_weighted_ece_with_unit_weights_is_the_ece() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    assert _ece_weighted(y, p, np.ones(200)) == pytest.approx(expected_calibration_error(y, p))
    doubled = np.r_[np.ones(100) * 2, np.zeros(100)]
    assert _ece_weighted(y, p, doubled) == pytest.approx(expected_calibration_error(y[:100], p[:100]))


def test_section_matches_direct_computations(tmp_path) -> None:
    y_fit, z_fit, s_fit, _ = _study_data(300, 1)
    cal = fit_temperature(z_fit, y_fit, fitted_on="fit set")
    fit_studies = aggregate_studies(s_fit, y_fit, apply_temperature(z_fit, cal.temperature))
    points = choose_decision_points(fit_studies.y_true, fit_studies.y_prob, threshold=0.5, fitted_on="fit set")
    rule = DecisionRule(0.5, cal, points)
    y, z, studies, patients = _study_data(200, 2)
    (tmp_path / "figures").mkdir()
    block = decision_rule_metrics(tmp_path, y_true=y, logits=z, study_ids=studies, patient_ids=patients,
                                  rule=rule, n_boot=200, seed=0)
    cal_p = apply_temperature(z, cal.temperature)
    assert block["image_level"]["calibrated"]["ece"] == pytest.approx(expected_calibration_error(y, cal_p))
    assert block["image_level"]["uncalibrated"]["ece"] == pytest.approx(expected_calibration_error(y, apply_temperature(z)))
    assert block["image_level"]["calibrated"]["ece"] < block["image_level"]["uncalibrated"]["ece"]
    low, high = block["image_level"]["calibrated"]["ece_ci95"]
    # ECE is biased upwards under resampling, so the interval need not contain the estimate.
    assert 0 < low < high < 1
    table = aggregate_studies(studies, y, cal_p)
    levels = np.array([level_of(p, points) for p in table.y_prob])
    lv = block["levels"]
    assert sum(row["n"] for row in lv["per_level"].values()) == len(table.y_true)
    ab = levels == "abnormal"
    assert lv["per_level"]["abnormal"]["accuracy"] == pytest.approx(table.y_true[ab].mean())
    outside = levels != "doubt"
    direct = np.mean((levels[outside] == "abnormal") == (table.y_true[outside] == 1))
    assert lv["accuracy_outside_doubt"] == pytest.approx(direct)
    assert lv["single_threshold_accuracy"] == pytest.approx(np.mean((table.y_prob >= 0.5) == table.y_true))
    hs = lv["points"]["high_sensitivity"]
    assert hs["sensitivity"] == pytest.approx((table.y_prob[table.y_true == 1] >= points.low).mean())
    assert (tmp_path / block["figure"]).is_file()
    text = to_markdown(decision_rule_blocks(block))
    assert "Three levels" in text and "high-specificity" in text
