"""The evaluation report's decision-rule section: calibration before and after, the three levels,
both operating points and the input guard, each with patient-level bootstrap intervals.

Everything here is measured on the evaluated split with the rule stored in the checkpoint (fitted
on the training hold-out), so nothing is tuned on the data it is judged on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracturescan.decision import LEVELS, DecisionRule, level_of
from fracturescan.evaluation.bootstrap import group_resample_counts, percentile_interval
from fracturescan.evaluation.calibration import expected_calibration_error, reliability_curve
from fracturescan.evaluation.metrics import aggregate_studies, group_codes
from fracturescan.evaluation.temperature import apply_temperature

__all__ = ["decision_rule_blocks", "decision_rule_metrics"]

ECE_BINS = 10
ALPHA = 0.05


def _ece_weighted(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """ECE of a resample given as multiplicities ``w`` (uniform bins, as :func:`expected_calibration_error`)."""
    which = np.searchsorted(np.linspace(0, 1, ECE_BINS + 1)[1:-1], p, side="left")
    total = w.sum()
    gaps = 0.0
    for b in np.unique(which):
        m = which == b
        n = w[m].sum()
        if n:
            gaps += abs(float((w[m] * y[m]).sum() - (w[m] * p[m]).sum()))
    return gaps / total if total else float("nan")


def _interval(statistic, counts: np.ndarray) -> tuple[float, float] | None:
    values = np.array([statistic(c.astype(np.float64)) for c in counts], dtype=np.float64)
    return percentile_interval(values, ALPHA)


def _calibration(y: np.ndarray, raw: np.ndarray, cal: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    out = {}
    for name, p in (("uncalibrated", raw), ("calibrated", cal)):
        curve = reliability_curve(y, p, n_bins=ECE_BINS)
        out[name] = {"ece": expected_calibration_error(y, p, n_bins=ECE_BINS),
                     "ece_ci95": _interval(lambda w, p=p: _ece_weighted(y, p, w), counts),
                     "reliability": {"mean_predicted": curve.mean_predicted.tolist(),
                                     "fraction_positive": curve.fraction_positive.tolist(),
                                     "counts": curve.counts.tolist()}}
    return out


def _rate(mask: np.ndarray, hit: np.ndarray, w: np.ndarray) -> float:
    n = (w * mask).sum()
    return float((w * mask * hit).sum() / n) if n else float("nan")


def _levels(y: np.ndarray, p: np.ndarray, single: np.ndarray, rule: DecisionRule, counts: np.ndarray) -> dict[str, Any]:
    """Share of studies and accuracy within each level; sensitivity/specificity at both cuts."""
    points = rule.points
    levels = np.array([level_of(float(v), points) for v in p])
    correct = np.where(levels == "abnormal", y == 1, y == 0)  # the doubt rows are not used
    out: dict[str, Any] = {"per_level": {}, "points": {}}
    ones = np.ones(len(y))
    for name in LEVELS:
        m = levels == name
        row = {"n": int(m.sum()), "share": float(m.mean()),
               "share_ci95": _interval(lambda w, m=m: _rate(np.ones_like(m), m, w), counts),
               "abnormal_fraction": float(y[m].mean()) if m.any() else None}
        if name != "doubt":
            row["accuracy"] = float(correct[m].mean()) if m.any() else None
            row["accuracy_ci95"] = _interval(lambda w, m=m: _rate(m, correct, w), counts)
        out["per_level"][name] = row
    outside = levels != "doubt"
    out["accuracy_outside_doubt"] = float(correct[outside].mean()) if outside.any() else None
    out["accuracy_outside_doubt_ci95"] = _interval(lambda w: _rate(outside, correct, w), counts)
    out["single_threshold_accuracy"] = float((single == y).mean())
    out["single_threshold_accuracy_ci95"] = _interval(lambda w: _rate(ones > 0, single == y, w), counts)
    for name, cut in (("high_sensitivity", points.low), ("high_specificity", points.high)):
        called = p >= cut
        out["points"][name] = {
            "cut": cut,
            "sensitivity": float(called[y == 1].mean()) if (y == 1).any() else None,
            "sensitivity_ci95": _interval(lambda w, c=called: _rate(y == 1, c, w), counts),
            "specificity": float((~called[y == 0]).mean()) if (y == 0).any() else None,
            "specificity_ci95": _interval(lambda w, c=called: _rate(y == 0, ~c, w), counts),
        }
    return out


def _calibration_title(rule: DecisionRule) -> str:
    """The figure's title says which temperature was applied; at T = 1 the two pairs of curves are
    the same, and the title says why."""
    if rule.calibration is None:
        return "Calibration: this checkpoint has none (T = 1)"
    if rule.temperature == 1.0:
        return "Calibration: temperature scaling kept T = 1\n(it did not lower the hold-out's cross-validated NLL)"
    return f"Calibration before and after temperature scaling (T = {rule.temperature:.3g})"


def decision_rule_metrics(out_dir: Path, *, y_true: Sequence[int], logits: Sequence[float],
                          study_ids: Sequence[str], patient_ids: Sequence[str], rule: DecisionRule,
                          guard_scores: Sequence[float] | None = None, n_boot: int = 1000,
                          seed: int = 0) -> dict[str, Any]:
    """Measure the checkpoint's decision rule on an evaluated split and draw the before/after
    reliability diagram into ``out_dir/figures``; returns the ``decision_rule`` metrics block."""
    from fracturescan.evaluation import plots

    y = np.asarray(y_true).astype(np.int64)
    z = np.asarray(logits, dtype=np.float64)
    raw, cal = apply_temperature(z), rule.probabilities(z)
    rng = np.random.default_rng(seed)
    image_counts = group_resample_counts(group_codes(patient_ids)[0], n_boot, rng)
    raw_studies, cal_studies = aggregate_studies(study_ids, y, raw), aggregate_studies(study_ids, y, cal)
    first = {}
    for s, pid in zip(study_ids, patient_ids):
        first.setdefault(s, pid)
    study_patients = [first[s] for s in cal_studies.study_ids]
    study_counts = group_resample_counts(group_codes(study_patients)[0], n_boot, rng)
    out: dict[str, Any] = {
        "missing": list(rule.missing), "temperature": rule.temperature, "n_bins": ECE_BINS,
        "calibration": None if rule.calibration is None else rule.calibration.to_dict(),
        "image_level": _calibration(y, raw, cal, image_counts),
        "study_level": _calibration(cal_studies.y_true, raw_studies.y_prob, cal_studies.y_prob, study_counts),
    }
    curves = {"image, uncalibrated": (y, raw), "image, calibrated": (y, cal),
              "study, uncalibrated": (cal_studies.y_true, raw_studies.y_prob),
              "study, calibrated": (cal_studies.y_true, cal_studies.y_prob)}
    path = plots.plot_calibration_curves(curves, Path(out_dir) / "figures" / "calibration_before_after.png",
                                         n_bins=ECE_BINS, title=_calibration_title(rule))
    out["figure"] = f"figures/{path.name}"
    if rule.points is not None:
        single = (cal_studies.y_prob >= rule.threshold).astype(np.int64)
        out["levels"] = _levels(cal_studies.y_true, cal_studies.y_prob, single, rule, study_counts)
        out["operating_points"] = rule.points.to_dict()
    if rule.guard is not None and guard_scores is not None:
        flagged = np.asarray(guard_scores, dtype=np.float64) > rule.guard.threshold
        out["guard"] = {"threshold": rule.guard.threshold, "flagged": int(flagged.sum()),
                        "kept_share": float(1 - flagged.mean()),
                        "kept_share_ci95": _interval(lambda w: _rate(np.ones_like(flagged), ~flagged, w), image_counts)}
    return out


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def decision_rule_blocks(block: dict[str, Any]) -> list[tuple]:
    """Report blocks (as :mod:`fracturescan.evaluation.report_format` renders them) for the section."""
    out: list[tuple] = [("h2", "Decision rule: calibration, levels, input guard")]
    if block["missing"]:
        out.append(("p", "This checkpoint lacks: " + ", ".join(block["missing"])
                    + " (add them with `fracturescan calibrate RUN DATA`)."))
    rows = [[f"{level} level, {name}", _fmt(block[f"{level}_level"][name]["ece"],
                                            block[f"{level}_level"][name]["ece_ci95"])]
            for level in ("image", "study") for name in ("uncalibrated", "calibrated")]
    out.append(("h3", f"Calibration (temperature {block['temperature']:.3f})"))
    cal = block.get("calibration") or {}
    if cal.get("cv_nll_scaled") is not None:
        kept = "kept" if cal["temperature"] != 1.0 else "not kept (T = 1)"
        out.append(("p", f"Fitted on {cal['fitted_on']}; scaling {kept}: 10-fold cross-validated NLL "
                         f"{cal['cv_nll_scaled']:.4f} with scaling vs {cal['cv_nll_identity']:.4f} without."))
    out += [("table", ["Probabilities", f"ECE ({block['n_bins']} bins) [95% CI]"], rows),
            ("img", block["figure"], "Reliability before and after temperature scaling")]
    if "levels" in block:
        lv, pts = block["levels"], block["operating_points"]
        out += [("h3", "Three levels (study level)"),
                ("p", f"normal below {pts['low']:.4f} (target sensitivity {pts['target_sensitivity']:g}), abnormal "
                      f"at or above {pts['high']:.4f} (target specificity {pts['target_specificity']:g}), doubt "
                      f"between; cuts chosen on: {pts['fitted_on']}."),
                ("table", ["Level", "Studies", "Share [95% CI]", "Accuracy within [95% CI]"],
                 [[name, str(row["n"]), _fmt(row["share"], row["share_ci95"]),
                   "(reader decides)" if name == "doubt" else _fmt(row.get("accuracy"), row.get("accuracy_ci95"))]
                  for name, row in lv["per_level"].items()]),
                ("p", f"Accuracy outside the doubt band {_fmt(lv['accuracy_outside_doubt'], lv['accuracy_outside_doubt_ci95'])}"
                      f" vs single threshold {_fmt(lv['single_threshold_accuracy'], lv['single_threshold_accuracy_ci95'])}."),
                ("table", ["Operating point", "Cut", "Sensitivity [95% CI]", "Specificity [95% CI]"],
                 [[name.replace("_", "-"), f"{row['cut']:.4f}", _fmt(row["sensitivity"], row["sensitivity_ci95"]),
                   _fmt(row["specificity"], row["specificity_ci95"])] for name, row in lv["points"].items()])]
    if "guard" in block:
        g = block["guard"]
        out += [("h3", "Input guard"),
                ("p", f"{g['flagged']} image(s) of this split flagged as not like the training data; kept "
                      f"{_fmt(g['kept_share'], g['kept_share_ci95'])} (threshold {g['threshold']:.3g}).")]
    return out
