"""Backbone registry: which torchvision architectures exist and what preprocessing each expects.

This module knows architectures and their defaults only (like timm's ``_registry``): building a
network from one is :mod:`fracturescan.models.network`, initial weights
:mod:`fracturescan.models.weights`, and :mod:`fracturescan.models.builder` puts them together.
It imports nothing above it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torchvision.models as tv_models

from fracturescan.errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Families whose torchvision forward() renormalises the input internally (``transform_input``).
#: We skip that step, so their ImageNet weights expect inputs normalised with mean=std=0.5.
HALF_NORMALISED = frozenset({"googlenet", "inception_v3"})
#: Families built for one input side (see :attr:`ModelDefaults.fixed_size`).
FIXED_SIZE_PREFIXES = ("vit_", "maxvit_")


@dataclass(frozen=True)
class ModelDefaults:
    """Preprocessing an architecture expects: square input side and per-channel normalisation."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: True when the network only accepts ``input_size`` (ViT's position embedding and MaxViT's
    #: window partition are sized for it); other backbones take any size of at least 32.
    fixed_size: bool = False


def available_architectures() -> list[str]:
    """Names of every torchvision classification model usable as a backbone, sorted."""
    return sorted(tv_models.list_models(module=tv_models))


def _defaults_for(arch: str) -> ModelDefaults:
    # The crop size and normalisation of torchvision's DEFAULT weights are what the pretrained
    # backbone saw during ImageNet training, so they are the right defaults for fine-tuning.
    try:
        keywords = tv_models.get_model_weights(arch).DEFAULT.transforms.keywords
    except (AttributeError, ValueError, KeyError):
        return ModelDefaults()
    if arch in HALF_NORMALISED:
        mean = std = (0.5, 0.5, 0.5)
    else:
        mean = tuple(keywords.get("mean", IMAGENET_MEAN))
        std = tuple(keywords.get("std", IMAGENET_STD))
    fixed = arch.startswith(FIXED_SIZE_PREFIXES)
    return ModelDefaults(int(keywords.get("crop_size", 224)), mean, std, fixed)  # type: ignore[arg-type]


#: Per-architecture preprocessing defaults (input size and normalisation), keyed by arch name.
MODEL_DEFAULTS: dict[str, ModelDefaults] = {a: _defaults_for(a) for a in available_architectures()}


def model_defaults(arch: str) -> ModelDefaults:
    """Return the preprocessing defaults for ``arch`` (raises ConfigError if unknown)."""
    check_arch(arch)
    return MODEL_DEFAULTS[arch]


def check_arch(arch: str) -> None:
    """Raise :class:`ConfigError` naming close and common choices if ``arch`` is not known."""
    if arch in MODEL_DEFAULTS:
        return
    names = available_architectures()
    close = difflib.get_close_matches(arch, names, n=3)
    common = ["densenet121", "resnet50", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_large"]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"unknown architecture {arch!r}: {hint}valid names include {', '.join(common)} "
        f"({len(names)} torchvision models in all; see fracturescan.models.available_architectures())"
    )
