"""Training configuration: typed, validated once up front, loadable from YAML, overridable by CLI flags.

:class:`TrainConfig` is an immutable pydantic model used like a frozen dataclass (attribute access,
keyword construction, :meth:`TrainConfig.replace`, :meth:`TrainConfig.to_dict`). Every value is
checked when the configuration is built, before any data or cache work, so a wrong value stops a
run at once with one line naming the key instead of a crash epochs later. Numbers written in YAML
as ``1e-4`` (which PyYAML reads as the *string* ``"1e-4"``, YAML 1.1 wanting a dot) are parsed
as numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, FracturescanError

if TYPE_CHECKING:
    from .models.preprocessing import Preprocessing


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1; in a config file that is a typo, not a number.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


Float = Annotated[float, BeforeValidator(_not_bool)]
Int = Annotated[int, BeforeValidator(_not_bool)]


class _Frozen(BaseModel):
    """Immutable; unknown keys, NaN and infinity refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON friendly), nested sections as dicts."""
        return self.model_dump()

    def replace(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` applied (like :func:`dataclasses.replace`)."""
        return type(self)(**{**self.to_dict(), **changes})


class AugmentConfig(_Frozen):
    """Training augmentation: horizontal flip probability, rotation range (± degrees), brightness
    shift (± fraction of full scale), contrast factor range (1 ± contrast), shift (± fraction of
    the image side, each axis), zoom factor range (1 ± scale), and the probability of random
    erasing (one rectangle of 2–20% of the image filled with a random grey level)."""

    hflip: Float = Field(0.5, ge=0.0, le=1.0)
    rotation: Float = Field(15.0, ge=0.0, le=180.0)
    brightness: Float = Field(0.2, ge=0.0, le=1.0)
    contrast: Float = Field(0.2, ge=0.0, lt=1.0)
    translate: Float = Field(0.0, ge=0.0, lt=1.0)  # random shift, ± fraction of the image side (both axes)
    scale: Float = Field(0.0, ge=0.0, lt=1.0)  # random zoom factor in [1 - scale, 1 + scale]
    erase: Float = Field(0.0, ge=0.0, le=1.0)  # probability of blanking one random rectangle


class TrainConfig(_Frozen):
    """Everything that defines a training run. Defaults follow the original recipe
    (DenseNet121, Adam lr 1e-4, batch 32, class-weighted BCE)."""

    data: str = ""
    out: str = "runs/run"
    body_part: str = "XR_WRIST"
    arch: str = "densenet121"
    weights: str = "imagenet"
    #: Square input side; None: the architecture's own (224 for DenseNet121, 299 for Inception v3).
    image_size: Int | None = Field(None, ge=32)
    #: Per-channel normalisation; None: the architecture's pretrained statistics (ImageNet's for
    #: most, 0.5/0.5 for Inception and GoogLeNet). See models/preprocessing.py.
    mean: list[Float] | None = None
    std: list[Float] | None = None
    batch_size: Int = Field(32, ge=1)
    eval_batch_size: Int = Field(64, ge=1)
    epochs: Int = Field(30, ge=1)
    lr: Float = Field(1e-4, gt=0.0)
    weight_decay: Float = Field(0.0, ge=0.0)
    hidden: Int = Field(256, ge=1)
    dropout: Float = Field(0.5, ge=0.0, lt=1.0)
    monitor: Literal["val_loss", "val_auc", "val_study_auc"] = "val_loss"
    # Patience N: act after N consecutive epochs without improvement (Keras's meaning, for both).
    # lr_patience 3 cuts the LR on the same epoch as torch's patience 2 did before it meant this.
    early_stopping_patience: Int = Field(5, ge=0)
    lr_patience: Int = Field(3, ge=0)
    lr_factor: Float = Field(0.1, gt=0.0, lt=1.0)
    min_lr: Float = Field(1e-7, ge=0.0)
    holdout_fraction: Float = Field(0.1, gt=0.0, lt=1.0)
    threshold_method: Literal["f1", "youden", "sensitivity"] = "f1"
    target_sensitivity: Float | None = Field(None, gt=0.0, le=1.0)
    seed: Int = Field(0, ge=0)
    device: str = "auto"
    amp: bool = True
    compile: bool = False  # torch.compile the model (worth it on GPU for long runs)
    cuda_graph: bool = False  # capture the whole training step in a CUDA graph (CUDA, one process)
    cache_dir: str | None = None
    max_train_images: Int | None = Field(None, ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    def __init__(self, **values: Any) -> None:
        # Only the top level translates errors: pydantic runs a nested model's own __init__ while
        # validating it, which would lose the section name ('augment.') from the message.
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc)) from None

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        from .models.registry import check_arch  # torchvision: imported only when a config is built

        _as_value_error(check_arch, arch)
        return arch

    @field_validator("body_part")
    @classmethod
    def _known_body_part(cls, body_part: str) -> str:
        from .data.mura import normalise_body_parts

        _as_value_error(normalise_body_parts, body_part)
        return body_part

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        import torch

        if device != "auto":
            try:
                torch.device(device)
            except RuntimeError:
                raise ValueError("use auto, cpu, cuda or cuda:N") from None
        return device

    @field_validator("weights")
    @classmethod
    def _weights_source(cls, weights: str) -> str:
        if weights.lower() not in ("imagenet", "none") and not Path(weights).expanduser().exists():
            raise ValueError("no such file or directory; use imagenet, none, a weights file or a checkpoint directory")
        return weights

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.cuda_graph and self.compile:
            raise ValueError("cuda_graph and compile are alternatives; choose one")
        if self.threshold_method == "sensitivity" and self.target_sensitivity is None:
            raise ValueError("threshold_method 'sensitivity' needs target_sensitivity")
        _as_value_error(lambda _: self.preprocessing(), None)  # e.g. a ViT at another size: fail now
        return self

    def preprocessing(self) -> "Preprocessing":
        """The input contract of this run: the architecture's defaults plus this config's
        ``image_size`` / ``mean`` / ``std`` (resolved once; the checkpoint records the result)."""
        from .models.preprocessing import resolve_preprocessing

        return resolve_preprocessing(self.arch, input_size=self.image_size, mean=self.mean, std=self.std)


def _as_value_error(check: Any, value: Any) -> None:
    # pydantic reports ValueErrors with the key's name; our own errors would escape unnamed.
    try:
        check(value)
    except FracturescanError as exc:
        raise ValueError(str(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """One line naming every offending key: ``Invalid configuration: lr: … (got 'abc')``."""
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            section = AugmentConfig if key.startswith("augment.") else TrainConfig
            valid = ", ".join(section.model_fields)
            parts.append(f"unknown key {key!r} (valid keys: {valid})")
            continue
        message = (str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]).rstrip(".")
        got = f" (got {error['input']!r})" if key and not isinstance(error["input"], dict) else ""
        parts.append(f"{key}: {message}{got}" if key else message)
    return "Invalid configuration: " + "; ".join(parts) + "."


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Apply ``values`` on top of ``base`` (defaults if None); the result is validated as a whole."""
    merged = (base or TrainConfig()).to_dict()
    values = dict(values)
    if isinstance(values.get("augment"), dict):  # a partial augment section keeps the other defaults
        values["augment"] = {**merged["augment"], **values["augment"]}
    return TrainConfig(**{**merged, **values})


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
            raise ConfigError(f"Config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of option: value.")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(str(exc).replace("Invalid configuration", f"Invalid configuration{where}", 1)) from None


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
