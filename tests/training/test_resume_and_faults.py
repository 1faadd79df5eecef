"""Resuming a run reproduces the uninterrupted run; divergence and bad runs fail clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fracturescan.config import TrainConfig
from fracturescan.errors import ConfigError
from fracturescan.training import loop
from fracturescan.training import step as step_module
from fracturescan.training.loop import TrainingDivergedError, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fracturescan.data.synth import generate_mura_phantoms

    root = tmp_path_factory.mktemp("tiny") / "MURA-v1.1"
    generate_mura_phantoms(root, studies=30, size=48, seed=5)
    return root


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), arch="resnet18", weights="none", image_size=32,
                batch_size=16, epochs=3, lr=1e-3, cache_dir=str(out.parent / "cache"), holdout_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_resume_continues_exactly(tiny_data: Path, tmp_path: Path) -> None:
    straight = train(_cfg(tiny_data, tmp_path / "a"))
    train(_cfg(tiny_data, tmp_path / "b", epochs=2))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_cfg(tiny_data, tmp_path / "b", epochs=3))
    resumed = train(_cfg(tiny_data, tmp_path / "b", epochs=3), resume=True)
    a, b = _history(straight.run_dir), _history(resumed.run_dir)
    assert [r["epoch"] for r in b] == ["1", "2", "3"]  # no gap, no duplicate
    for ra, rb in zip(a, b):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-5)
        assert float(ra["val_loss"]) == pytest.approx(float(rb["val_loss"]), rel=1e-5)
    assert resumed.threshold == pytest.approx(straight.threshold, abs=1e-5)


def test_resume_without_state_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Nothing to resume"):
        train(_cfg(tiny_data, tmp_path / "none"), resume=True)


def test_nan_loss_stops_with_the_batch_named(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    real = loop.weighted_bce
    state = {"validations": 0, "train_calls_after": 0}

    def poisoned(logits, targets, weights):
        loss = real(logits, targets, weights)
        if not logits.requires_grad:  # a validation pass ends each epoch
            state["validations"] += 1
            return loss
        if state["validations"] == 1:  # epoch 2
            state["train_calls_after"] += 1
            if state["train_calls_after"] == 2:  # its second batch (index 1)
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop, "weighted_bce", poisoned)  # validation
    monkeypatch.setattr(step_module, "weighted_bce", poisoned)  # the training step
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, batch 1") as err:
        train(_cfg(tiny_data, tmp_path / "nan", epochs=3, batch_size=16))
    assert "nan" in str(err.value).lower()
    # the checkpoint from epoch 1 survives and loads
    from fracturescan.models import load_checkpoint

    model, meta = load_checkpoint(tmp_path / "nan" / "best")
    assert meta.metrics["epoch"] == 1


def test_config_yaml_and_overrides(tmp_path: Path) -> None:
    from fracturescan.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.001\naugment:\n  rotation: 5\n")
    cfg = load_config(path, {"epochs": 3, "batch_size": None})
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.augment.rotation, cfg.augment.hflip) == (3, 0.001, 32, 5, 0.5)
    path.write_text("epoch: 7\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_config(path)
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig().replace(dropout=1.5)
