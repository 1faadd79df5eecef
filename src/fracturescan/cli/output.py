"""Tables and files the CLI prints or writes (formatting only, no ML)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import typer

from ..notices import NOT_A_DIAGNOSIS, SYNTHETIC_MODEL

if TYPE_CHECKING:  # the CLI imports torch only for the commands that need it
    from ..inference import ImagePrediction, Predictor, StudyPrediction


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned plain-text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def echo_summary(summary: Any) -> None:
    """Print a synth summary (any dataclass with per-split counts)."""
    typer.echo(json.dumps(asdict(summary), indent=1, default=str))


def echo_counts(rows: list, index: Any) -> None:
    """Print data-info counts."""
    typer.echo(f"{index.kind} data set at {index.root}" + ("  [SYNTHETIC phantoms]" if index.synthetic else ""))
    labels = {0: "normal", 1: "abnormal"}
    typer.echo(table(["split", "body part", "label", "studies", "images", "patients"],
                     [(r.split or "-", r.body_part, labels[r.label], r.studies, r.images, r.patients) for r in rows]))
    for split in sorted({r.split for r in rows}):
        sub = [r for r in rows if r.split == split]
        typer.echo(f"{split or 'all'}: {sum(r.studies for r in sub)} studies, {sum(r.images for r in sub)} images")


_KEYS = ("accuracy", "auc", "precision", "recall", "specificity", "f1", "kappa")


def echo_holdout(metrics: dict) -> None:
    """Print hold-out metrics after training."""
    rows = [(k, metrics["holdout_image"].get(k), metrics["holdout_study"].get(k)) for k in _KEYS]
    typer.echo("Patient-level hold-out (carved from train; used for early stopping and the threshold):")
    typer.echo(table(["metric", "image", "study"], rows))


def echo_metrics(metrics: dict) -> None:
    """Print evaluation metrics, image vs study level, with 95% intervals."""
    if metrics.get("synthetic"):
        typer.echo(SYNTHETIC_MODEL)

    def cell(level: str, key: str) -> str:
        block = metrics[level]
        value, ci = block["metrics"].get(key), (block.get("ci95") or {}).get(key)
        if value is None:
            return "-"
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    threshold = metrics["threshold"]
    typer.echo(f"Split {metrics['split']}, threshold {threshold['value']:.3f} ({threshold['source']})")
    typer.echo(table(["metric", "image (95% CI)", "study (95% CI)"],
                     [(k, cell("image_level", k), cell("study_level", k)) for k in _KEYS]))
    if "per_body_part" in metrics:  # the MURA paper's table: study-level kappa per body part
        def part_cell(row: dict, key: str) -> str:
            ci = row.get(f"{key}_ci95")
            return "-" if row[key] is None else f"{row[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

        typer.echo(table(["body part", "studies", "kappa (95% CI)", "AUC (95% CI)"],
                         [(row["body_part"], row["studies"], part_cell(row, "kappa"), part_cell(row, "auc"))
                          for row in metrics["per_body_part"]["rows"]]))


def echo_predictions(predictor: "Predictor", images: list["ImagePrediction"], studies: list["StudyPrediction"]) -> None:
    """Print per-image and per-study predictions: calibrated probability, the single-threshold
    decision, the abnormal/doubt/normal category and why an image is not trusted."""
    if predictor.metadata.synthetic:
        typer.echo(SYNTHETIC_MODEL)
    rule = predictor.rule
    points = (f"; categories: normal < {rule.points.low:.3f} <= doubt < {rule.points.high:.3f} <= abnormal"
              if rule.points else "")
    typer.echo(f"threshold {predictor.threshold:.3f}{points}"
               + ("" if rule.calibration else " (uncalibrated probabilities)"))
    if predictor.tta is not None:
        typer.echo(predictor.tta.describe())
    typer.echo(table(["image", "probability", "decision", "category", "note"],
                     [(i.path, i.probability, _decision(i.abnormal), i.level, i.error or "; ".join(i.flags))
                      for i in images]))
    typer.echo("")
    typer.echo(table(["study", "images", "probability", "decision", "category"],
                     [(s.study_id, s.n_images, s.probability, _decision(s.abnormal), s.level) for s in studies]))
    for note in dict.fromkeys(n for s in studies for n in s.notes):
        typer.echo(f"note: {note}")
    typer.echo(NOT_A_DIAGNOSIS)


def echo_trust_fit(fit: Any) -> None:
    """Print what ``fracturescan calibrate`` fitted."""
    cal, pts, guard = fit.calibration, fit.points, fit.guard
    typer.echo(f"Calibration: temperature {cal.temperature:.3f} on {cal.n_images} images of {cal.n_studies} "
               f"studies (NLL {cal.nll_before:.4f} -> {cal.nll_after:.4f}); {cal.fitted_on}")
    typer.echo(f"Threshold on the calibrated scale: {fit.threshold:.4f}")
    typer.echo(f"Operating points: normal < {pts.low:.4f} (sensitivity {pts.sensitivity_at_low:.3f}) <= doubt < "
               f"{pts.high:.4f} (specificity {pts.specificity_at_high:.3f}) <= abnormal; {pts.n_abnormal} abnormal and "
               f"{pts.n_normal} normal studies" + ("" if pts.resolvable else
                                                   " (too few to resolve the targets: the strictest cuts were used)"))
    if guard is not None:
        typer.echo(f"Input guard: threshold {guard.threshold:.3g} keeps {guard.kept_on_threshold_data:.1%} of "
                   f"{guard.n_threshold_images} images (fitted on {guard.n_fit_images})")


def _decision(abnormal: bool | None) -> str:
    return "unreadable" if abnormal is None else ("abnormal" if abnormal else "normal")


#: Columns of ``predict --csv``: one row per image (level "image"), then one per study (level
#: "study", probability = mean of its readable, unflagged images, ``n_images`` = how many were used).
#: ``category`` is abnormal / doubt / normal (the checkpoint's two operating points; empty without
#: them); ``flags`` says why an image is not trusted (a study row: what was left out or is missing).
PREDICTION_COLUMNS = ("level", "study", "path", "n_images", "probability", "decision", "grouped_by", "error",
                      "category", "flags")


def write_predictions_csv(path: Path, images: list["ImagePrediction"], studies: list["StudyPrediction"],
                          rules: dict[str, str]) -> None:
    """Image rows then study rows in one CSV, told apart by the ``level`` column."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for i in images:
            writer.writerow(["image", i.study_id, i.path, "", _prob(i.probability), _decision(i.abnormal),
                             rules.get(i.study_id, ""), i.error or "", i.level or "", "; ".join(i.flags)])
        for s in studies:
            writer.writerow(["study", s.study_id, "", s.n_images, _prob(s.probability), _decision(s.abnormal),
                             rules.get(s.study_id, ""), "", s.level or "", "; ".join(s.notes)])


def _prob(probability: float | None) -> str:
    return "" if probability is None else f"{probability:.6f}"


def write_predictions_json(path: Path, predictor: "Predictor", images: list["ImagePrediction"],
                           studies: list["StudyPrediction"], rules: dict[str, str]) -> None:
    """Image and study results (each study with the rule that grouped it) plus the model's
    threshold and synthetic flag as JSON."""
    doc = {
        "threshold": predictor.threshold,
        "calibrated": predictor.rule.calibration is not None,
        "operating_points": None if predictor.rule.points is None else predictor.rule.points.to_dict(),
        "missing": list(predictor.rule.missing),
        "synthetic_model": bool(predictor.metadata.synthetic),
        "test_time_augmentation": None if predictor.tta is None else [v.name for v in predictor.tta.views],
        "notice": NOT_A_DIAGNOSIS,
        "images": [asdict(i) for i in images],
        "studies": [{**asdict(s), "grouped_by": rules.get(s.study_id)} for s in studies],
    }
    Path(path).write_text(json.dumps(doc, indent=1))
