"""Evaluation figures written as PNG files.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas instead of
``pyplot``: no global figure registry, no interactive backend and nothing to leak in long-running
servers. Every function writes one PNG, releases the figure and returns the path.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from fracturescan.data.records import LABEL_NAMES
from fracturescan.errors import DatasetError
from fracturescan.evaluation.calibration import expected_calibration_error, reliability_curve
from fracturescan.evaluation.metrics import binary_metrics, validate_binary_inputs
from fracturescan.training.monitor import MONITOR_LABELS, best_epoch

__all__ = [
    "Curves",
    "best_epoch_marker",
    "plot_calibration_curves",
    "plot_confusion_matrix",
    "plot_precision_recall_curves",
    "plot_roc_curves",
    "plot_training_curves",
]

log = logging.getLogger(__name__)

#: ``{legend label: (y_true, y_prob)}``, e.g. ``{"image level": ..., "study level": ...}``.
Curves = Mapping[str, tuple[ArrayLike, ArrayLike]]

DPI = 100
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def _new_figure(width: float = 6.0, height: float = 5.0) -> Figure:
    """A figure attached to a private Agg canvas (pyplot never sees it)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG, free its artists and return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()
    log.debug("wrote %s", path)
    return path


def plot_confusion_matrix(
    confusion: ArrayLike,
    path: Path,
    *,
    title: str = "Confusion matrix",
    class_names: tuple[str, str] = LABEL_NAMES,
) -> Path:
    """Draw a 2x2 confusion matrix with counts and row percentages.

    Args:
        confusion: ``[[tn, fp], [fn, tp]]``: rows are the true class, columns the prediction
            (scikit-learn's layout).
        path: PNG file to write.
        title: figure title (say which level and threshold).
        class_names: names of class 0 and class 1.
    """
    matrix = np.asarray(confusion, dtype=np.int64)
    if matrix.shape != (2, 2):
        raise DatasetError(f"a binary confusion matrix is 2x2, got shape {matrix.shape}")
    row_totals = matrix.sum(axis=1, keepdims=True)
    row_share = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    fig = _new_figure(5.8, 4.8)
    ax = fig.add_subplot()
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            colour = "white" if row_share[i, j] > 0.55 else "black"
            ax.text(j, i, f"{matrix[i, j]:,}\n({100 * row_share[i, j]:.1f}% of row)",
                    ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks([0, 1], [f"pred. {name}" for name in class_names])
    ax.set_yticks([0, 1], [f"true {name}" for name in class_names])
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of true class (row %)", shrink=0.8)
    return _save(fig, path)


def _plottable(curves: Curves) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """(colour, label, labels, probabilities) of each curve that has both classes; a curve with
    one class only is skipped, and the log says so."""
    for colour, (label, (y_true, y_prob)) in zip(_COLORS, curves.items()):
        y, p = validate_binary_inputs(y_true, y_prob)
        if y.min() == y.max():
            log.warning("%s: only one class present, curve skipped", label)
            continue
        yield colour, label, y, p


def _note_if_empty(ax: Axes, drawn: int) -> None:
    """Say on the axes why nothing is drawn instead of leaving it blank."""
    if drawn == 0:
        ax.text(0.5, 0.5, "undefined: needs both normal\nand abnormal cases",
                ha="center", va="center", transform=ax.transAxes)


def _legend_operating_point(ax: Axes, threshold: float | None, drawn: int) -> None:
    """One legend entry explaining the round markers."""
    if threshold is not None and drawn:
        ax.plot([], [], "o", color="white", mec="black",
                label=f"operating point (t = {threshold:.3f})")


def plot_roc_curves(
    curves: Curves, path: Path, *, title: str = "ROC curve", threshold: float | None = None
) -> Path:
    """ROC curves of several prediction sets on one axes, AUC in the legend.

    When ``threshold`` is given, the operating point of each curve is marked.
    """
    from sklearn.metrics import roc_curve  # local: keeps module import light

    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC = 0.500)")
    drawn = 0
    for colour, label, y, p in _plottable(curves):
        fpr, tpr, _ = roc_curve(y, p)
        auc = binary_metrics(y, p, 0.5)["auc"]
        ax.plot(fpr, tpr, color=colour, lw=2, label=f"{label} (AUC = {auc:.3f}, n = {len(y):,})")
        if threshold is not None:
            m = binary_metrics(y, p, threshold)
            ax.plot(1 - m["specificity"], m["recall"], "o", color=colour, ms=8, mec="black")
        drawn += 1
    _legend_operating_point(ax, threshold, drawn)
    _note_if_empty(ax, drawn)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (1 - specificity)",
           ylabel="True positive rate (sensitivity)", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def plot_precision_recall_curves(
    curves: Curves, path: Path, *, title: str = "Precision-recall curve",
    threshold: float | None = None,
) -> Path:
    """Precision-recall curves on one axes, average precision and prevalence in the legend."""
    from sklearn.metrics import precision_recall_curve

    fig = _new_figure()
    ax = fig.add_subplot()
    drawn = 0
    for colour, label, y, p in _plottable(curves):
        precision, recall, _ = precision_recall_curve(y, p)
        ap = binary_metrics(y, p, 0.5)["average_precision"]
        ax.step(recall, precision, where="post", color=colour, lw=2,
                label=f"{label} (AP = {ap:.3f})")
        ax.axhline(y.mean(), color=colour, ls=":", lw=1,
                   label=f"{label} prevalence = {y.mean():.3f}")
        if threshold is not None:
            m = binary_metrics(y, p, threshold)
            if m["precision"] is not None:
                ax.plot(m["recall"], m["precision"], "o", color=colour, ms=8, mec="black")
        drawn += 1
    _legend_operating_point(ax, threshold, drawn)
    _note_if_empty(ax, drawn)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall (sensitivity)", ylabel="Precision (PPV)",
           title=title)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="lower left", fontsize=9)
    return _save(fig, path)


def plot_calibration_curves(
    curves: Curves, path: Path, *, n_bins: int = 10, strategy: str = "uniform",
    title: str = "Calibration (reliability diagram)",
) -> Path:
    """Reliability diagram (ECE in the legend) above a histogram of the predicted probabilities."""
    fig = _new_figure(6.0, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    for colour, (label, (y_true, y_prob)) in zip(_COLORS, curves.items()):
        y, p = validate_binary_inputs(y_true, y_prob)
        curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
        ece = expected_calibration_error(y, p, n_bins=n_bins, strategy=strategy)
        top.plot(curve.mean_predicted, curve.fraction_positive, "o-", color=colour, lw=2,
                 label=f"{label} (ECE = {ece:.3f})")
        # Step outlines keep overlapping histograms of both levels readable.
        bottom.hist(p, bins=np.linspace(0, 1, 21), color=colour, histtype="step", lw=2)
    top.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Observed fraction abnormal",
            title=f"{title}\n{n_bins} {strategy} bins")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    # The histogram's colours are the curves' above; a legend of its own did not fit the width.
    bottom.set(xlabel="Predicted probability of abnormal", ylabel="Count\n(colours as above)")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def _read_history(history_csv: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a training history CSV; blanks and non-numbers become NaN."""
    path = Path(history_csv)
    if not path.is_file():
        raise DatasetError(f"training history {path} does not exist; pass the run's history.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DatasetError(f"training history {path} has no rows: did training finish an epoch?")

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    columns = [name for name in rows[0] if name is not None]
    return {name.strip(): np.array([number(row.get(name)) for row in rows]) for name in columns}


def _draw_series(ax: Axes, x: np.ndarray, history: Mapping[str, np.ndarray],
                 names: dict[str, str]) -> int:
    """Plot each present, non-empty column; return how many were drawn."""
    drawn = 0
    for column, label in names.items():
        values = history.get(column)
        if values is None or not np.isfinite(values).any():
            continue
        ax.plot(x, values, "o-", ms=3, lw=1.5, label=label)
        drawn += 1
    return drawn


def best_epoch_marker(history: Mapping[str, np.ndarray], monitor: str) -> tuple[int, str] | None:
    """(epoch, legend text) of the best epoch by ``monitor`` (the training run's own definition,
    :func:`fracturescan.training.monitor.best_epoch`), or None when it cannot be told."""
    if monitor not in history or "epoch" not in history:
        return None
    rows = [{"epoch": e, monitor: v} for e, v in zip(history["epoch"], history[monitor]) if np.isfinite(e)]
    epoch = best_epoch(rows, monitor)
    if epoch is None:
        return None
    return epoch, f"best epoch {epoch} ({MONITOR_LABELS.get(monitor, monitor)}; the kept checkpoint)"


def plot_training_curves(history_csv: Path, path: Path, *, title: str = "Training history",
                         monitor: str = "val_loss") -> Path:
    """Losses, hold-out AUCs and learning rate per epoch from a history CSV.

    Expected columns: ``epoch,train_loss,val_loss,val_auc,val_study_auc,lr,seconds``; missing or
    empty columns are skipped (a panel with nothing to show is left out). The best epoch by
    ``monitor`` (the run's ``monitor`` setting, which chose the kept checkpoint) is marked on the
    panel that shows that value.

    Raises:
        DatasetError: the file is missing, empty, or has none of the plottable columns.
    """
    history = _read_history(history_csv)
    n_rows = len(next(iter(history.values())))
    epochs = history.get("epoch")
    x = epochs if epochs is not None and np.isfinite(epochs).all() else np.arange(1, n_rows + 1)
    panels = [
        # "val_*" columns are the patient-level hold-out carved from train, not MURA's valid split
        # (the test set), so the figure says hold-out.
        ("Loss", {"train_loss": "train loss", "val_loss": "hold-out loss"}, False),
        ("Hold-out AUC",
         {"val_auc": "image-level AUC", "val_study_auc": "study-level AUC"}, False),
        ("Learning rate", {"lr": "learning rate"}, True),
    ]
    present = [panel for panel in panels
               if any(np.isfinite(history.get(c, np.array([np.nan]))).any() for c in panel[1])]
    if not present:
        raise DatasetError(
            f"training history {history_csv} has none of the columns train_loss, val_loss, "
            f"val_auc, val_study_auc, lr (found {sorted(history)})"
        )
    marker = best_epoch_marker(history, monitor)
    fig = _new_figure(5.0 * len(present), 5.0)
    axes = np.atleast_1d(fig.subplots(1, len(present)))
    for ax, (ylabel, names, log_scale) in zip(axes, present):
        _draw_series(ax, x, history, names)
        values = np.concatenate([history[c] for c in names if c in history])
        if log_scale and np.all(values[np.isfinite(values)] > 0):
            ax.set_yscale("log")
        if marker is not None and monitor in names:
            ax.axvline(marker[0], color="grey", ls=":", lw=1, label=marker[1])
        ax.set(xlabel="Epoch", ylabel=ylabel, title=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        # Below the axes: inside, the legend hid the early epochs' points.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.suptitle(title)
    return _save(fig, path)
