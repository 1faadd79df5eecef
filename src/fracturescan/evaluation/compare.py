"""Compare evaluated runs on the same studies: study-level metrics and paired differences.

Two models scored on the same test studies are correlated (an easy study is easy for both), so
their difference is measured with a *paired* bootstrap: every resample draws the same patients
(with all their studies: one patient's studies are correlated too) for all models, and the
interval is taken over the per-resample differences. That interval is
much narrower than one built from each model's own interval, and it is the honest one.

Each model keeps its own decision threshold (the one stored in its checkpoint, chosen on its own
training hold-out), so threshold-dependent metrics compare the models as they would be used.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fracturescan.errors import DatasetError
from fracturescan.evaluation.bootstrap import bootstrap_replicates, group_resample_counts, percentile_interval
from fracturescan.evaluation.metrics import binary_metrics, group_codes
from fracturescan.evaluation.report_format import md_cell
from fracturescan.notices import SYNTHETIC_DATA

log = logging.getLogger(__name__)

#: Study-level metrics shown in the comparison, in display order.
COMPARED_METRICS = ("auc", "kappa", "recall", "specificity", "f1", "accuracy")
ALPHA = 0.05


@dataclass(frozen=True)
class EvaluatedRun:
    """One run's study-level predictions on a split, as ``fracturescan evaluate`` wrote them."""

    name: str
    eval_dir: Path
    split: str
    threshold: float
    synthetic: bool
    study_ids: np.ndarray  # sorted
    y_true: np.ndarray
    y_prob: np.ndarray
    patient_ids: np.ndarray | None = None  # per study; None: each study its own patient


def load_evaluation(path: Path | str, split: str = "valid", name: str | None = None) -> EvaluatedRun:
    """Read a run's ``eval_<split>/`` (or an evaluation folder given directly).

    Raises:
        DatasetError: no evaluation there, or its files are incomplete.
    """
    path = Path(path)
    eval_dir = path if (path / "metrics.json").is_file() else path / f"eval_{split}"
    metrics_file, studies_file = eval_dir / "metrics.json", eval_dir / "study_predictions.csv"
    if not metrics_file.is_file() or not studies_file.is_file():
        raise DatasetError(f"{path} has no evaluation of the {split!r} split ({eval_dir} lacks metrics.json "
                           f"or study_predictions.csv): run `fracturescan evaluate {path} --split {split}` first.")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        with studies_file.open(newline="", encoding="utf-8") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda row: row["study_id"])
        y = np.array([int(row["label"]) for row in rows], dtype=np.int64)
        p = np.array([float(row["prob"]) for row in rows], dtype=np.float64)
        run = EvaluatedRun(
            name=name or (path.name if path.name != f"eval_{split}" else path.parent.name),
            eval_dir=eval_dir, split=str(metrics["split"]), threshold=float(metrics["threshold"]["value"]),
            synthetic=bool(metrics.get("synthetic", False)),
            study_ids=np.array([row["study_id"] for row in rows]), y_true=y, y_prob=p,
            patient_ids=np.array([row.get("patient_id") or row["study_id"] for row in rows]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{eval_dir} is not a readable evaluation ({exc}); re-run `fracturescan evaluate`.") from exc
    if not rows:
        raise DatasetError(f"{studies_file} lists no studies.")
    return run


def _check_same_studies(runs: Sequence[EvaluatedRun]) -> None:
    """Refuse to compare runs evaluated on different studies, labels or splits."""
    ref = runs[0]
    for run in runs[1:]:
        if run.split != ref.split:
            raise DatasetError(f"{run.name} was evaluated on {run.split!r}, {ref.name} on {ref.split!r}: "
                               "compare evaluations of the same split.")
        if not np.array_equal(run.study_ids, ref.study_ids):
            only_ref = np.setdiff1d(ref.study_ids, run.study_ids).size
            only_run = np.setdiff1d(run.study_ids, ref.study_ids).size
            raise DatasetError(f"{ref.name} and {run.name} were evaluated on different studies ({only_ref} only in "
                               f"{ref.name}, {only_run} only in {run.name}); evaluate both on the same data.")
        if not np.array_equal(run.y_true, ref.y_true):
            changed = int((run.y_true != ref.y_true).sum())
            raise DatasetError(f"{changed} studies carry different labels in {ref.name} and {run.name}; "
                               "evaluate both on the same data.")


def _interval(values: np.ndarray) -> list[float] | None:
    """:func:`percentile_interval` as a JSON-ready list."""
    interval = percentile_interval(values, ALPHA)
    return None if interval is None else list(interval)


def compare_runs(runs: Sequence[EvaluatedRun], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Each run's study-level metrics with 95% intervals, and each run's paired difference from
    the first (the reference), with the 95% interval of that difference.

    All models share every bootstrap resample of patients (see the module docstring).
    """
    if len(runs) < 2:
        raise DatasetError("Give at least two evaluated runs to compare.")
    _check_same_studies(runs)
    ref = runs[0]
    patients = ref.patient_ids if ref.patient_ids is not None else ref.study_ids
    counts = group_resample_counts(group_codes(patients)[0], int(n_boot), np.random.default_rng(seed))
    replicates = [bootstrap_replicates(run.y_true, run.y_prob, run.threshold, counts) for run in runs]
    models, differences = [], []
    for run, reps in zip(runs, replicates):
        point = binary_metrics(run.y_true, run.y_prob, run.threshold)
        models.append({"name": run.name, "eval_dir": str(run.eval_dir), "threshold": run.threshold,
                       "synthetic": run.synthetic,
                       "metrics": {m: point[m] for m in COMPARED_METRICS},
                       "ci95": {m: _interval(reps[m]) for m in COMPARED_METRICS}})
    for model, reps in zip(models[1:], replicates[1:]):
        entry: dict[str, Any] = {"name": model["name"], "reference": ref.name, "metrics": {}}
        for m in COMPARED_METRICS:
            a, b = models[0]["metrics"][m], model["metrics"][m]
            ci = _interval(reps[m] - replicates[0][m])
            entry["metrics"][m] = {"difference": None if a is None or b is None else b - a, "ci95": ci,
                                   "excludes_zero": bool(ci is not None and (ci[0] > 0 or ci[1] < 0))}
        differences.append(entry)
    return {"split": ref.split, "n_studies": int(ref.y_true.size), "n_abnormal": int(ref.y_true.sum()),
            "synthetic": any(run.synthetic for run in runs),
            "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "paired": True, "resampling_unit": "study",
                          "interval": "percentile"},
            "models": models, "differences": differences}


def _num(value: float | None, ci: list[float] | None = None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if ci is not None:
        text += f" ({ci[0]:+.3f} to {ci[1]:+.3f})" if signed else f" ({ci[0]:.3f}–{ci[1]:.3f})"
    return text


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown: a metrics table and a paired-differences table."""
    lines = [f"# Model comparison: {result['split']} split, {result['n_studies']} studies "
             f"({result['n_abnormal']} abnormal)", ""]
    if result["synthetic"]:
        lines += [f"**{SYNTHETIC_DATA}**", ""]
    lines += ["Study level (a study's probability is the mean of its images'); 95% intervals from "
              f"{result['bootstrap']['n_boot']} paired bootstrap resamples of patients; each model at its own "
              "threshold." + (" Each interval holds for one comparison on its own, with no adjustment for "
                              "making several." if len(result["differences"]) > 1 else ""),
              "", "| model | threshold | " + " | ".join(COMPARED_METRICS) + " |",
              "|---|---|" + "---|" * len(COMPARED_METRICS)]
    for model in result["models"]:
        cells = [_num(model["metrics"][m], model["ci95"][m]) for m in COMPARED_METRICS]
        lines.append(f"| {md_cell(model['name'])} | {model['threshold']:.3f} | " + " | ".join(cells) + " |")
    for diff in result["differences"]:
        lines += ["", f"## {md_cell(diff['name'])} minus {md_cell(diff['reference'])} (paired)", "",
                  "| metric | difference (95% interval) | interval excludes 0 |", "|---|---|---|"]
        for m in COMPARED_METRICS:
            d = diff["metrics"][m]
            lines.append(f"| {m} | {_num(d['difference'], d['ci95'], signed=True)} | "
                         f"{'yes' if d['excludes_zero'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_comparison(result: dict[str, Any], runs: Sequence[EvaluatedRun], out_dir: Path | str) -> Path:
    """Write ``comparison.json``, ``comparison.md`` and ``roc_study.png`` into ``out_dir``."""
    from fracturescan.evaluation.plots import plot_roc_curves  # matplotlib only when writing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "comparison.md").write_text(comparison_markdown(result), encoding="utf-8")
    title = f"Study-level ROC, {result['split']}" + (" (SYNTHETIC data)" if result["synthetic"] else "")
    plot_roc_curves({run.name: (run.y_true, run.y_prob) for run in runs}, out_dir / "roc_study.png", title=title)
    log.info("comparison written to %s", out_dir)
    return out_dir
