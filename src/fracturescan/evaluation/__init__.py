"""fracturescan.evaluation: metrics, bootstrap intervals, thresholds, calibration, plots, reports.

Label 1 = abnormal is the positive class; a study's probability is the mean of its images'.
Plots and the report are imported lazily from their modules (``fracturescan.evaluation.plots``,
``fracturescan.evaluation.report``) by the names re-exported here, so ``import
fracturescan.evaluation`` stays cheap for code that only needs the metrics.
"""

from __future__ import annotations

from typing import Any

from fracturescan.evaluation.bootstrap import (
    bootstrap_ci,
    bootstrap_replicates,
    group_resample_counts,
)
from fracturescan.evaluation.calibration import (
    ReliabilityCurve,
    expected_calibration_error,
    reliability_curve,
)
from fracturescan.evaluation.metrics import (
    METRIC_KEYS,
    SCALAR_METRICS,
    StudyTable,
    aggregate_studies,
    binary_metrics,
    validate_binary_inputs,
)
from fracturescan.evaluation.threshold import THRESHOLD_METHODS, ThresholdChoice, choose_threshold

_LAZY = {
    "write_evaluation_report": "fracturescan.evaluation.report",
    "plot_confusion_matrix": "fracturescan.evaluation.plots",
    "plot_roc_curves": "fracturescan.evaluation.plots",
    "plot_precision_recall_curves": "fracturescan.evaluation.plots",
    "plot_calibration_curves": "fracturescan.evaluation.plots",
    "plot_training_curves": "fracturescan.evaluation.plots",
}

__all__ = [
    "METRIC_KEYS",
    "SCALAR_METRICS",
    "THRESHOLD_METHODS",
    "ReliabilityCurve",
    "StudyTable",
    "ThresholdChoice",
    "aggregate_studies",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_replicates",
    "choose_threshold",
    "expected_calibration_error",
    "group_resample_counts",
    "reliability_curve",
    "validate_binary_inputs",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import matplotlib-based helpers only when first used (matplotlib is slow to import)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
