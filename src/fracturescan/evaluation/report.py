"""The evaluation report: metrics, predictions, figures and a human-readable summary.

:func:`write_evaluation_report` is the one entry point. It computes image- and study-level
metrics with study-bootstrap confidence intervals and writes, into one directory::

    metrics.json            machine-readable results (the returned dict)
    predictions.csv         one row per image
    study_predictions.csv   one row per study (probability = mean of its images)
    figures/*.png           confusion matrices, ROC, precision-recall, calibration, training
    report.md, report.html  the same summary as Markdown and as self-contained HTML (figures
                            embedded, so the one file can be mailed)
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import fracturescan
from fracturescan.errors import DatasetError
from fracturescan.evaluation import plots
from fracturescan.evaluation.body_parts import body_part_blocks, body_part_table, study_body_parts
from fracturescan.evaluation.bootstrap import bootstrap_ci
from fracturescan.evaluation.calibration import expected_calibration_error
from fracturescan.evaluation.trust_report import decision_rule_blocks
from fracturescan.evaluation.metrics import (
    StudyTable,
    aggregate_studies,
    binary_metrics,
    validate_binary_inputs,
    validate_threshold,
)
from fracturescan.evaluation.report_format import Block, to_html, to_markdown
from fracturescan.notices import NOT_A_DEVICE, SYNTHETIC_DATA

__all__ = ["write_evaluation_report"]

log = logging.getLogger(__name__)

ALPHA = 0.05
ECE_BINS = 10


_METRIC_LABELS: dict[str, str] = {
    "kappa": "Cohen's kappa (MURA headline)",
    "auc": "ROC AUC",
    "average_precision": "Average precision",
    "accuracy": "Accuracy",
    "recall": "Sensitivity (recall)",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "f1": "F1",
    "brier": "Brier score (lower is better)",
}



def _jsonable(value: Any) -> Any:
    """Recursively turn ``value`` into plain JSON types; NaN and infinities become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)  # Paths, dates, enums: their text is what a reader needs


def _check_lengths(n: int, **columns: Sequence[Any]) -> None:
    """Every per-image column must have one entry per prediction."""
    for name, column in columns.items():
        if len(column) != n:
            raise DatasetError(f"got {len(column)} {name} for {n} predictions; pass one per image")


def _study_patients(study: StudyTable, patient_ids: Sequence[Any]) -> list[str]:
    """Patient of each study; a study split across patients means a corrupt index."""
    patients = np.asarray([str(pid) for pid in patient_ids], dtype=object)
    # Rows are numbered in order of first appearance, so index k's first hit is study k's.
    _, first = np.unique(study.image_index, return_index=True)
    per_study = patients[first]
    clash = per_study[study.image_index] != patients
    if clash.any():
        bad = sorted({str(s) for s in study.study_ids[study.image_index[clash]]})
        raise DatasetError(f"studies {bad[:3]} list images of more than one patient; fix the index")
    return per_study.tolist()


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV with a header row (probabilities keep full float precision via repr)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _level(y: np.ndarray, p: np.ndarray, threshold: float, groups: Any, n_boot: int,
           seed: int) -> dict[str, Any]:
    """Metrics, bootstrap intervals and calibration error for one level."""
    return {
        "metrics": binary_metrics(y, p, threshold),
        "ci95": bootstrap_ci(y, p, threshold, groups, n_boot=n_boot, seed=seed, alpha=ALPHA),
        "calibration": {
            "ece": expected_calibration_error(y, p, n_bins=ECE_BINS),
            "n_bins": ECE_BINS,
            "strategy": "uniform",
        },
    }


def _figures(
    fig_dir: Path,
    image: tuple[np.ndarray, np.ndarray],
    study: tuple[np.ndarray, np.ndarray],
    metrics: Mapping[str, Any],
    threshold: float,
    history_csv: Path | None,
    monitor: str,
) -> dict[str, str]:
    """Draw every figure; return ``{name: path relative to the report directory}``."""
    curves = {"image level": image, "study level": study}
    made: dict[str, Path] = {}
    for level in ("image", "study"):
        m = metrics[f"{level}_level"]["metrics"]
        made[f"confusion_{level}"] = plots.plot_confusion_matrix(
            [[m["tn"], m["fp"]], [m["fn"], m["tp"]]], fig_dir / f"confusion_{level}.png",
            title=f"{level.capitalize()}-level confusion matrix\nthreshold = {threshold:.3f}")
    made["roc"] = plots.plot_roc_curves(curves, fig_dir / "roc.png", threshold=threshold)
    made["precision_recall"] = plots.plot_precision_recall_curves(
        curves, fig_dir / "precision_recall.png", threshold=threshold)
    made["calibration"] = plots.plot_calibration_curves(
        curves, fig_dir / "calibration.png", n_bins=ECE_BINS)
    if history_csv is not None:
        made["training"] = plots.plot_training_curves(history_csv, fig_dir / "training_curves.png", monitor=monitor)
    return {name: f"figures/{path.name}" for name, path in made.items()}


def _fmt(value: Any) -> str:
    """Numbers for tables: counts with separators, scores with three decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _fmt_ci(ci: Sequence[float] | None) -> str:
    """A confidence interval as ``[low, high]``."""
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _metrics_table(metrics: Mapping[str, Any]) -> Block:
    """Image-level vs study-level scores with their intervals."""
    img, std = metrics["image_level"], metrics["study_level"]
    rows = [[label, _fmt(img["metrics"][key]), _fmt_ci(img["ci95"][key]),
             _fmt(std["metrics"][key]), _fmt_ci(std["ci95"][key])]
            for key, label in _METRIC_LABELS.items()]
    rows.append(["Expected calibration error", _fmt(img["calibration"]["ece"]), "",
                 _fmt(std["calibration"]["ece"]), ""])
    return ("table", ["Metric", "Image level", "95% CI", "Study level", "95% CI"], rows)


def _confusion_table(m: Mapping[str, Any]) -> Block:
    """A 2x2 confusion matrix as a text table."""
    return ("table", ["", "Predicted normal", "Predicted abnormal"],
            [["True normal", _fmt(m["tn"]), _fmt(m["fp"])],
             ["True abnormal", _fmt(m["fn"]), _fmt(m["tp"])]])


def _blocks(metrics: Mapping[str, Any]) -> list[Block]:
    """The report's content, independent of the output format."""
    counts, thr, boot = metrics["counts"], metrics["threshold"], metrics["bootstrap"]
    blocks: list[Block] = [("h1", f"fracturescan evaluation report: {metrics['split']} split")]
    if metrics["synthetic"]:
        blocks.append(("warning", "NOT A MEASURE OF CLINICAL PERFORMANCE",
                       SYNTHETIC_DATA))
    blocks.append(("note", "Not a diagnostic device.", NOT_A_DEVICE))
    blocks += [
        ("h2", "Summary"),
        ("table", ["Item", "Value"], [
            ["Split", metrics["split"]],
            ["Images / studies / patients",
             f"{counts['images']:,} / {counts['studies']:,} / {counts['patients']:,}"],
            ["Abnormal images / studies",
             f"{counts['abnormal_images']:,} / {counts['abnormal_studies']:,}"],
            ["Decision threshold", f"{thr['value']:.4f} (source: {thr['source']})"],
            ["Synthetic data", "YES" if metrics["synthetic"] else "no"],
            ["Generated", metrics["generated_at"]],
            ["fracturescan version", metrics["fracturescan_version"]],
        ]),
        ("h2", "Metrics"),
        _metrics_table(metrics),
        ("p", "An image or study is called abnormal when its probability is >= "
              f"{thr['value']:.4f}. A study's probability is the mean of its images' "
              "probabilities (MURA). "
              f"95% intervals: percentile bootstrap, {boot['n_boot']:,} resamples (seed "
              f"{boot['seed']}) of whole patients, so the studies and images of one patient, "
              "which are correlated, stay together. "
              f"Calibration error uses {ECE_BINS} equal-width bins."),
        *(body_part_blocks(metrics["per_body_part"]) if "per_body_part" in metrics else []),
        *(decision_rule_blocks(metrics["decision_rule"]) if "decision_rule" in metrics else []),
        ("h2", "Confusion matrices"),
        ("h3", "Image level"), _confusion_table(metrics["image_level"]["metrics"]),
        ("img", metrics["files"]["figures"]["confusion_image"], "Image-level confusion matrix"),
        ("h3", "Study level"), _confusion_table(metrics["study_level"]["metrics"]),
        ("img", metrics["files"]["figures"]["confusion_study"], "Study-level confusion matrix"),
        ("h2", "Curves"),
    ]
    captions = {"roc": "ROC curves", "precision_recall": "Precision-recall curves",
                "calibration": "Calibration", "training": "Training history"}
    for name, caption in captions.items():
        if name in metrics["files"]["figures"]:
            blocks += [("h3", caption), ("img", metrics["files"]["figures"][name], caption)]
    model_rows = [[str(k), v if isinstance(v, str) else json.dumps(v)]
                  for k, v in metrics["model_info"].items()]
    blocks += [("h2", "Model"), ("table", ["Field", "Value"], model_rows or [["(none)", ""]]),
               ("h2", "Files"),
               ("table", ["File", "Content"], [
                   ["metrics.json", "all numbers above, machine-readable"],
                   ["predictions.csv",
                    "one row per image: path, study, patient, label, prob, decision"],
                   ["study_predictions.csv", "one row per study (mean probability)"]])]
    return blocks


def write_evaluation_report(
    out_dir: Path,
    *,
    paths: Sequence[str],
    study_ids: Sequence[str],
    patient_ids: Sequence[str],
    y_true: ArrayLike,
    y_prob: ArrayLike,
    threshold: float,
    threshold_source: str,
    split: str,
    model_info: Mapping[str, Any],
    synthetic: bool,
    history_csv: Path | None = None,
    monitor: str = "val_loss",
    n_boot: int = 1000,
    seed: int = 0,
    body_parts: Sequence[str] | None = None,
    decision_rule: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate image-level predictions and write the full report into ``out_dir``.

    Args:
        out_dir: directory to write into (created if needed; existing report files replaced).
        paths, study_ids, patient_ids: one entry per image.
        y_true, y_prob: label (1 = abnormal) and predicted probability per image.
        threshold: decision threshold (``prob >= threshold`` is abnormal).
        threshold_source: where the threshold came from, e.g. ``"checkpoint (f1 on hold-out)"``.
        split: name of the evaluated split, e.g. ``"valid"``.
        model_info: facts about the model (architecture, checkpoint, ...), stored as given.
        synthetic: the data are synthetic phantoms; the report then says so prominently.
        history_csv: optional training history to plot.
        monitor: the run's monitored value (history column) that defined its best epoch.
        n_boot, seed: bootstrap resamples and seed for the 95% intervals.
        body_parts: the body part of each image (e.g. ``XR_WRIST``); adds the per-body-part
            table (``per_body_part`` in metrics.json) and a ``body_part`` column to both CSVs.
        decision_rule: the checkpoint's decision rule measured on this split
            (:func:`fracturescan.evaluation.trust_report.decision_rule_metrics`); adds its section.

    Returns:
        The dict written to ``metrics.json``.

    Raises:
        DatasetError: inconsistent inputs (lengths, labels, studies across patients, ...).
    """
    y, p = validate_binary_inputs(y_true, y_prob)
    threshold = validate_threshold(threshold)
    _check_lengths(len(y), paths=paths, study_ids=study_ids, patient_ids=patient_ids)
    if history_csv is not None and not Path(history_csv).is_file():
        raise DatasetError(
            f"training history {history_csv} does not exist; omit it or fix the path"
        )
    study = aggregate_studies(study_ids, y, p)
    study_patients = _study_patients(study, patient_ids)
    study_parts = None if body_parts is None else study_body_parts(study_ids, body_parts)
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    log.info("evaluating %d images in %d studies (bootstrap n=%d)", len(y), len(study), n_boot)

    metrics: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fracturescan_version": fracturescan.__version__,
        "split": split,
        "synthetic": bool(synthetic),
        "threshold": {"value": threshold, "source": threshold_source},
        "counts": {
            "images": int(len(y)), "studies": len(study),
            "patients": len({str(pid) for pid in patient_ids}),
            "abnormal_images": int(y.sum()), "abnormal_studies": int(study.y_true.sum()),
        },
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "alpha": ALPHA,
                      "interval": "percentile", "resampling_unit": "patient"},
        # One patient can have several studies: resampling patients keeps them together.
        "image_level": _level(y, p, threshold, patient_ids, n_boot, seed),
        "study_level": _level(study.y_true, study.y_prob, threshold, study_patients, n_boot, seed),
        "model_info": model_info,
    }
    if decision_rule is not None:
        metrics["decision_rule"] = dict(decision_rule)
    if body_parts is not None:
        metrics["per_body_part"] = body_part_table(study_ids, body_parts, y, p, threshold, n_boot=n_boot,
                                                   seed=seed, alpha=ALPHA, patient_ids=patient_ids)
    decision = (p >= threshold).astype(int)
    part_column = ["body_part"] if body_parts is not None else []
    image_parts = [[str(b)] for b in body_parts] if body_parts is not None else [[]] * len(y)
    _write_csv(out_dir / "predictions.csv",
               ["path", "study_id", "patient_id", "label", "prob", "decision"] + part_column,
               [[str(a), str(b), str(c), int(d), repr(float(e)), int(f)] + g
                for a, b, c, d, e, f, g in zip(paths, study_ids, patient_ids, y, p, decision, image_parts)])
    per_study = [[b] for b in study_parts] if study_parts is not None else [[]] * len(study)
    _write_csv(out_dir / "study_predictions.csv",
               ["study_id", "patient_id", "n_images", "label", "prob", "decision"] + part_column,
               [[str(s), pid, int(k), int(lab), repr(float(prob)), int(prob >= threshold)] + part
                for s, pid, k, lab, prob, part in zip(study.study_ids, study_patients, study.n_images,
                                                      study.y_true, study.y_prob, per_study)])
    figures = _figures(out_dir / "figures", (y, p), (study.y_true, study.y_prob), metrics,
                       threshold, history_csv, monitor)
    metrics["files"] = {"predictions": "predictions.csv",
                        "study_predictions": "study_predictions.csv",
                        "report_md": "report.md", "report_html": "report.html",
                        "figures": figures}
    metrics = _jsonable(metrics)
    (out_dir / "metrics.json").write_text(
        json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    blocks = _blocks(metrics)
    (out_dir / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(
        to_html(blocks, f"fracturescan evaluation: {split}", base=out_dir), encoding="utf-8")
    log.info("evaluation report written to %s", out_dir)
    return metrics
