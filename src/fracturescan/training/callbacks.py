"""Small training helpers: early stopping, history CSV, TensorBoard, run-state persistence."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_path
from .monitor import is_improvement

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "val_loss", "val_auc", "val_study_auc", "lr", "seconds", "train_images",
)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` consecutive epochs without improvement of the monitored value
    (Keras's meaning; "improvement" as defined in :mod:`fracturescan.training.monitor`)."""

    patience: int
    mode: str = "min"  # "min" for losses, "max" for AUCs
    best: float = math.nan
    bad_epochs: int = 0

    def improved(self, value: float) -> bool:
        """Record ``value``; True if it is the best so far."""
        better = is_improvement(value, self.best, self.mode)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no improvement (never before the first
        epoch without one, so patience 0 stops at the first)."""
        return self.bad_epochs > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Serializable state (for --resume)."""
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """(Re)write the per-epoch history CSV atomically from the full list of rows."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})


def write_skipped(path: Path, skipped: Iterable[tuple[Any, str]]) -> None:
    """``path,reason`` rows for the images that could not be read (quoted as CSV, so any
    character in a path survives)."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows([str(p), str(reason)] for p, reason in skipped)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename, so a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
