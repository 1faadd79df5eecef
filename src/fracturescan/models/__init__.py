"""Backbone registry, the FractureNet classifier, pretrained weights and checkpoints."""

from fracturescan.models.checkpoint import (
    CheckpointMetadata,
    load_checkpoint,
    read_metadata,
    read_state_dict,
    resolve_checkpoint_dir,
    save_checkpoint,
    update_metadata,
)
from fracturescan.models.model_card import render_model_card
from fracturescan.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_DEFAULTS,
    FractureNet,
    ModelDefaults,
    available_architectures,
    build_model,
    model_defaults,
)
from fracturescan.models.weights import (
    apply_weights,
    imagenet_weights_path,
    imagenet_weights_url,
    load_imagenet_state_dict,
    remap_legacy_densenet_keys,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_DEFAULTS",
    "CheckpointMetadata",
    "FractureNet",
    "ModelDefaults",
    "apply_weights",
    "available_architectures",
    "build_model",
    "imagenet_weights_path",
    "imagenet_weights_url",
    "load_checkpoint",
    "load_imagenet_state_dict",
    "model_defaults",
    "read_metadata",
    "read_state_dict",
    "remap_legacy_densenet_keys",
    "render_model_card",
    "resolve_checkpoint_dir",
    "save_checkpoint",
    "update_metadata",
]
