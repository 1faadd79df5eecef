"""Training configuration: a frozen dataclass, loadable from YAML, overridable by CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data.transforms import AugmentConfig
from .errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults follow the original recipe
    (DenseNet121, Adam lr 1e-4, batch 32, class-weighted BCE)."""

    data: str = ""
    out: str = "runs/run"
    body_part: str = "XR_WRIST"
    arch: str = "densenet121"
    weights: str = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: int = 30
    lr: float = 1e-4
    weight_decay: float = 0.0
    hidden: int = 256
    dropout: float = 0.5
    monitor: str = "val_loss"
    early_stopping_patience: int = 5
    lr_patience: int = 2
    lr_factor: float = 0.1
    min_lr: float = 1e-7
    holdout_fraction: float = 0.1
    threshold_method: str = "f1"
    target_sensitivity: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False  # torch.compile the model (worth it on GPU for long runs)
    cuda_graph: bool = False  # capture the whole training step in a CUDA graph (CUDA, one process)
    cache_dir: str | None = None
    max_train_images: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 32, "image_size must be at least 32"),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be positive"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 < self.holdout_fraction < 1.0, "holdout_fraction must be in (0, 1)"),
            (self.monitor in ("val_loss", "val_auc", "val_study_auc"), "monitor must be val_loss, val_auc or val_study_auc"),
            (self.threshold_method in ("f1", "youden", "sensitivity"), "threshold_method must be f1, youden or sensitivity"),
            (not (self.cuda_graph and self.compile), "cuda_graph and compile are alternatives; choose one"),
            (self.threshold_method != "sensitivity" or self.target_sensitivity is not None,
             "threshold_method 'sensitivity' needs target_sensitivity"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"Invalid training configuration: {message}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON friendly)."""
        return dataclasses.asdict(self)


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Apply ``values`` (unknown keys rejected) on top of ``base`` (defaults if None)."""
    base = base or TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"Unknown configuration keys {sorted(unknown)}; valid keys: {sorted(known)}.")
    values = dict(values)
    if isinstance(values.get("augment"), dict):
        aug_known = {f.name for f in fields(AugmentConfig)}
        bad = set(values["augment"]) - aug_known
        if bad:
            raise ConfigError(f"Unknown augment keys {sorted(bad)}; valid: {sorted(aug_known)}.")
        values["augment"] = dataclasses.replace(base.augment, **values["augment"])
    try:
        return dataclasses.replace(base, **values)
    except TypeError as exc:
        raise ConfigError(f"Invalid configuration: {exc}") from exc


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML file (optional), then apply non-None ``overrides`` (CLI flags win)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of option: value.")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
