"""What "better" means for the monitored validation value, and which epoch was best.

One definition serves early stopping, the checkpoint that is kept, the model card's
``best_epoch``, and the mark on the training-curves figure, so they always name the same epoch:
the first epoch whose monitored value is strictly better than every earlier one and not beaten
later (NaN is never best). Patience means what Keras documents for ``EarlyStopping`` and
``ReduceLROnPlateau``: act after ``patience`` consecutive epochs without improvement.

Imports only the standard library and torch's scheduler (for :func:`plateau_scheduler`), so the
evaluation figures can use it without pulling in the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

#: Monitored values where lower is better; the others (AUCs) are better when higher.
_LOWER_IS_BETTER = frozenset({"val_loss", "train_loss"})

#: How each monitored value reads in figures and reports ("val_*" is the patient-level hold-out
#: carved from train; MURA's valid split is the test set).
MONITOR_LABELS: dict[str, str] = {
    "val_loss": "lowest hold-out loss",
    "val_auc": "highest hold-out image AUC",
    "val_study_auc": "highest hold-out study AUC",
}


def monitor_mode(monitor: str) -> Literal["min", "max"]:
    """``"min"`` for losses, ``"max"`` for AUCs."""
    return "min" if monitor in _LOWER_IS_BETTER else "max"


def is_improvement(value: float, best: float, mode: str) -> bool:
    """True when ``value`` is strictly better than ``best`` (NaN ``best`` = nothing yet; NaN ``value`` never)."""
    if math.isnan(value):
        return False
    return math.isnan(best) or (value < best if mode == "min" else value > best)


def best_epoch(history: Sequence[Mapping[str, Any]], monitor: str) -> int | None:
    """Epoch number of the best row of ``history`` (rows with ``epoch`` and ``monitor``), or None
    if no row has a finite value. Ties keep the earlier epoch, as early stopping does."""
    mode, best, epoch = monitor_mode(monitor), math.nan, None
    for row in history:
        value = _as_float(row.get(monitor))
        if is_improvement(value, best, mode):
            best, epoch = value, int(float(row["epoch"]))
    return epoch


def _as_float(value: Any) -> float:
    # history.csv read back gives strings, and an empty cell for a value that was not logged.
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plateau_scheduler(optimizer: Any, monitor: str, *, factor: float, patience: int, min_lr: float) -> Any:
    """torch's ReduceLROnPlateau that cuts the learning rate after ``patience`` epochs without
    improvement (Keras's meaning). torch cuts after ``patience + 1`` such epochs, so it is given
    one less; 0 and 1 both cut after the first epoch without improvement."""
    import torch

    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=monitor_mode(monitor), factor=factor, patience=max(patience - 1, 0), min_lr=min_lr)
