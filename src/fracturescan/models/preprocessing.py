"""The preprocessing contract: input size, normalisation and channels, resolved ONCE.

Like timm's ``resolve_data_config``: the architecture's defaults (from the registry) plus the
run's overrides give a :class:`Preprocessing`, which training writes into the checkpoint; the
cache, the hold-out validation, the explanation reference, inference, explanations and the ONNX
export all read it back from there, so every path feeds the network the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from fracturescan.data.transforms import normalise
from fracturescan.errors import ConfigError
from fracturescan.models.registry import model_defaults

if TYPE_CHECKING:
    from fracturescan.models.metadata import CheckpointMetadata

#: Smallest input side: below it the deepest stages of the backbones collapse to nothing.
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 ``(N, H, W)`` batch becomes the network's input: squash-resize to
    ``input_size`` (done by the image reader / cache), then scale to [0, 1], replicate to
    ``channels`` and normalise with ``mean`` / ``std``."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W)`` (or float ``(N, 1, H, W)`` in [0, 1]) → normalised ``(N, C, H, W)``."""
        return normalise(pixels, self.mean, self.std, self.channels)

    def to_metadata(self) -> dict[str, Any]:
        """The checkpoint metadata fields that record this contract."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels}

    @classmethod
    def from_metadata(cls, meta: "CheckpointMetadata") -> "Preprocessing":
        """The contract a checkpoint recorded."""
        return cls(int(meta.input_size), tuple(float(m) for m in meta.mean),
                   tuple(float(s) for s in meta.std), int(meta.channels))


def _stats(name: str, values: Sequence[float] | None, default: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if values is None:
        return tuple(float(v) for v in default)
    try:
        stats = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a list of numbers, got {values!r}") from exc
    if len(stats) < channels:
        raise ConfigError(f"{name} needs one value per input channel ({channels}), got {list(stats)}")
    if name == "std" and min(stats) <= 0:
        raise ConfigError(f"std values must be positive, got {list(stats)}")
    return stats


def resolve_preprocessing(arch: str, *, input_size: int | None = None, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None, channels: int = 3) -> Preprocessing:
    """The contract for ``arch``: its registry defaults, overridden by any value given.

    Raises:
        ConfigError: unknown architecture, a size below :data:`MIN_INPUT_SIZE`, a size other than
            the one a fixed-size architecture (ViT, MaxViT) was built for, or bad mean/std.
    """
    defaults = model_defaults(arch)
    size = defaults.input_size if input_size is None else int(input_size)
    if size < MIN_INPUT_SIZE:
        raise ConfigError(f"image_size must be at least {MIN_INPUT_SIZE}, got {size}")
    if defaults.fixed_size and size != defaults.input_size:
        raise ConfigError(f"{arch} only takes {defaults.input_size} px inputs (its layers are sized for "
                          f"them), not {size}: leave image_size unset or use another architecture")
    return Preprocessing(size, _stats("mean", mean, defaults.mean, channels),
                         _stats("std", std, defaults.std, channels), int(channels))
