"""Early stopping stops, LR reduction reduces (Keras's meaning of patience), one best epoch everywhere."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fracturescan.config import TrainConfig
from fracturescan.training import loop
from fracturescan.training.callbacks import EarlyStopping, write_skipped
from fracturescan.training.monitor import best_epoch, plateau_scheduler
from fracturescan.training.step import make_optimizer


def keras_epochs_run(values: list[float], patience: int, mode: str) -> int:
    """Epochs Keras's EarlyStopping lets run, written from its documentation ("number of epochs
    with no improvement after which training will be stopped"): a wait counter that resets on
    improvement and stops training once it reaches ``patience``."""
    best, wait = (math.inf if mode == "min" else -math.inf), 0
    for epoch, value in enumerate(values, start=1):
        wait += 1
        if (value < best) if mode == "min" else (value > best):
            best, wait = value, 0
        elif wait >= patience:
            return epoch
    return len(values)


def epochs_run(values: list[float], patience: int, mode: str) -> int:
    """Drive EarlyStopping exactly as the training loop does (check before each epoch)."""
    early, run = EarlyStopping(patience, mode), 0
    for value in values:
        if early.should_stop:
            break
        run += 1
        early.improved(value)
    return run


def test_patience_counts_epochs_without_improvement() -> None:
    losses = [1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.75, 0.76, 0.77, 0.78, 0.79, 0.5]
    assert epochs_run(losses, 3, "min") == 5  # epochs 3, 4, 5 bring nothing: stop after epoch 5
    assert epochs_run(losses, 4, "min") == 10  # epoch 6 improves; 7, 8, 9, 10 don't: stop after 10
    assert epochs_run(losses, 0, "min") == 3  # the first epoch without improvement
    assert epochs_run([0.5, 0.6, 0.7, 0.8], 2, "max") == 4  # rising AUC never stops


def test_matches_keras_on_random_sequences() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        values = list(np.round(rng.normal(size=int(rng.integers(1, 25))).cumsum(), 1))  # with ties
        patience, mode = int(rng.integers(0, 6)), str(rng.choice(["min", "max"]))
        assert epochs_run(values, patience, mode) == keras_epochs_run(values, patience, mode), (values, patience)


def test_nan_is_an_epoch_without_improvement_and_state_survives_resume() -> None:
    early = EarlyStopping(2, "min")
    early.improved(1.0)
    early.improved(math.nan)
    again = EarlyStopping(2, "min")
    again.load_state_dict(early.state_dict())
    assert not again.should_stop and not again.improved(math.nan) and again.should_stop


def keras_learning_rates(values: list[float], lr: float, factor: float, patience: int, min_lr: float,
                         mode: str) -> list[float]:
    """LR in force during each epoch under Keras's ReduceLROnPlateau (as documented: cut by
    ``factor`` after ``patience`` epochs with no improvement, never below ``min_lr``)."""
    best, wait, out = (math.inf if mode == "min" else -math.inf), 0, []
    for value in values:
        out.append(lr)
        if (value < best) if mode == "min" else (value > best):
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                lr, wait = max(lr * factor, min_lr), 0
    return out


@pytest.mark.parametrize(("patience", "mode"), [(0, "min"), (1, "min"), (2, "min"), (3, "max")])
def test_plateau_scheduler_cuts_after_patience_epochs(patience: int, mode: str) -> None:
    values = [1.0, 0.5, 0.6, 0.7, 0.8, 0.3, 0.9, 0.95, 0.97, 0.99, 1.2, 1.3]
    values = values if mode == "min" else [-v for v in values]
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1e-2)
    sched = plateau_scheduler(opt, "val_loss" if mode == "min" else "val_auc", factor=0.1, patience=patience,
                              min_lr=1e-5)
    seen = []
    for value in values:
        seen.append(opt.param_groups[0]["lr"])
        sched.step(value)
    expected = keras_learning_rates(values, 1e-2, 0.1, patience, 1e-5, mode)
    assert seen == pytest.approx(expected, rel=1e-9)
    assert min(seen) < 1e-2  # it did reduce


def test_best_epoch_one_definition() -> None:
    rows = [{"epoch": e, "val_loss": v, "val_auc": a}
            for e, v, a in [(1, 0.9, 0.6), (2, 0.7, 0.8), (3, 0.7, 0.9), (4, math.nan, 0.9), (5, 0.8, 0.85)]]
    assert best_epoch(rows, "val_loss") == 2  # a tie keeps the earlier epoch
    assert best_epoch(rows, "val_auc") == 3
    as_csv = [{k: ("" if isinstance(v, float) and math.isnan(v) else str(v)) for k, v in r.items()} for r in rows]
    assert best_epoch(as_csv, "val_loss") == 2 and best_epoch(as_csv, "val_auc") == 3
    assert best_epoch([{"epoch": 1, "val_loss": math.nan}], "val_loss") is None


def test_best_epoch_is_the_epoch_early_stopping_kept() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        values = list(np.round(rng.normal(size=int(rng.integers(1, 15))), 1))
        values = [math.nan if rng.random() < 0.1 else v for v in values]
        early, kept = EarlyStopping(100, "max"), None
        for epoch, value in enumerate(values, start=1):
            if early.improved(value):
                kept = epoch
        rows = [{"epoch": e, "val_auc": v} for e, v in enumerate(values, start=1)]
        assert best_epoch(rows, "val_auc") == kept


def test_default_recipe_is_adam_lr_1e4_batch_32() -> None:
    cfg = TrainConfig()
    opt = make_optimizer(torch.nn.Linear(2, 1), cfg.lr, cfg.weight_decay, cuda_graph=False)
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["weight_decay"] == 0.0
    assert cfg.batch_size == 32


def test_skipped_images_csv_quotes_any_path(tmp_path: Path) -> None:
    skipped = [('/data/a "quoted", name.png', 'not an image: "bad", header'), ("/plain.png", "empty file")]
    write_skipped(tmp_path / "skipped.csv", skipped)
    with (tmp_path / "skipped.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["path", "reason"], *[list(r) for r in skipped]]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fracturescan.data.synth import generate_mura_phantoms

    root = tmp_path_factory.mktemp("tiny") / "MURA-v1.1"
    generate_mura_phantoms(root, studies=24, size=40, seed=7)
    return root


def test_training_stops_and_cuts_lr_on_a_scripted_validation_loss(tiny_data: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The real loop, with the hold-out loss replaced by a script: best at epoch 2, then worse.
    script = iter([1.0, 0.8, 0.9, 0.95, 0.99, 1.1, 1.2, 1.3])
    real_validate = loop._validate

    def scripted(*args, **kwargs):
        _, auc, study_auc, probs = real_validate(*args, **kwargs)
        return next(script, 2.0), auc, study_auc, probs

    monkeypatch.setattr(loop, "_validate", scripted)
    cfg = TrainConfig(data=str(tiny_data), out=str(tmp_path / "run"), arch="resnet18", weights="none",
                      image_size=32, batch_size=64, epochs=8, lr=1e-3, lr_factor=0.5, lr_patience=1,
                      early_stopping_patience=3, cache_dir=str(tmp_path / "cache"), holdout_fraction=0.25)
    result = loop.train(cfg)
    with (tmp_path / "run" / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4, 5]  # epochs 3, 4, 5 bad: stop
    # LR in force each epoch: cut after each single bad epoch (patience 1): epochs 4 and 5.
    assert [float(r["lr"]) for r in history] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4])
    meta = json.loads((tmp_path / "run" / "best" / "metadata.json").read_text())
    assert meta["metrics"]["best_epoch"] == best_epoch(history, "val_loss") == 2
    assert "| best_epoch | 2 |" in (tmp_path / "run" / "best" / "MODEL_CARD.md").read_text()
    assert result is not None and result.epochs_run == 5
