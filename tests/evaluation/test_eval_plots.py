"""Figures: one readable PNG per call, no global pyplot state, tolerant training-curve reader."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from fracturescan.errors import DatasetError
from fracturescan.evaluation import plots


def _data(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def _check_png(path: Path, min_width: int = 400) -> np.ndarray:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape[1] >= min_width  # readable at 100 dpi
    assert pixels.std() > 10  # something was drawn, not a blank canvas
    return pixels


def test_every_plot_writes_a_png_without_touching_pyplot(tmp_path: Path) -> None:
    y, p = _data()
    curves = {"image level": (y, p), "study level": _data(1, 120)}
    before = plt.get_fignums()
    written = [
        plots.plot_confusion_matrix([[50, 10], [5, 35]], tmp_path / "cm.png", title="CM"),
        plots.plot_roc_curves(curves, tmp_path / "roc.png", threshold=0.5),
        plots.plot_precision_recall_curves(curves, tmp_path / "sub" / "pr.png", threshold=0.5),
        plots.plot_calibration_curves(curves, tmp_path / "cal.png"),
    ]
    assert written == [tmp_path / "cm.png", tmp_path / "roc.png", tmp_path / "sub" / "pr.png",
                       tmp_path / "cal.png"]
    for path in written:
        _check_png(path)
    assert plt.get_fignums() == before


def test_curves_with_one_class_are_skipped_not_fatal(tmp_path: Path) -> None:
    one_class = (np.ones(10, int), np.linspace(0.1, 0.9, 10))
    _check_png(plots.plot_roc_curves({"only abnormal": one_class}, tmp_path / "roc.png"))
    _check_png(plots.plot_precision_recall_curves({"x": one_class}, tmp_path / "pr.png"))


def test_confusion_matrix_must_be_2x2(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        plots.plot_confusion_matrix([[1, 2, 3]], tmp_path / "cm.png")


def _history(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_training_curves_full_and_partial(tmp_path: Path) -> None:
    rows = [f"{e},{1 / e},{1.2 / e},{0.7 + e / 100},{0.72 + e / 100},{1e-4 / e},30"
            for e in range(1, 8)]
    header = "epoch,train_loss,val_loss,val_auc,val_study_auc,lr,seconds"
    full = _history(tmp_path / "full.csv", header, rows)
    wide = _check_png(plots.plot_training_curves(full, tmp_path / "full.png"))
    # Only losses, with a blank cell: one panel, so a narrower figure.
    partial = _history(tmp_path / "part.csv", "epoch,train_loss,val_loss", ["1,0.9,", "2,0.7,0.8"])
    narrow = _check_png(plots.plot_training_curves(partial, tmp_path / "part.png"), min_width=300)
    assert narrow.shape[1] < wide.shape[1] / 2
    # Zero learning rate cannot go on a log axis: must still plot.
    zero_lr = _history(tmp_path / "lr.csv", "lr,val_auc", ["0,0.5", "0.001,0.6"])
    _check_png(plots.plot_training_curves(zero_lr, tmp_path / "lr.png"), min_width=300)


@pytest.mark.parametrize(
    ("header", "rows"), [("epoch,seconds", ["1,30"]), ("epoch,train_loss", [])]
)
def test_training_curves_without_data_raise(tmp_path: Path, header: str, rows: list[str]) -> None:
    with pytest.raises(DatasetError):
        plots.plot_training_curves(_history(tmp_path / "h.csv", header, rows), tmp_path / "t.png")


def test_training_curves_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        plots.plot_training_curves(tmp_path / "nope.csv", tmp_path / "t.png")
