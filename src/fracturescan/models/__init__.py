"""Models, bottom to top: the backbone registry (architectures and their preprocessing
defaults), the preprocessing contract, the network, initial weights, checkpoint files and their
metadata type, and the builder that puts a network and its weights together.

The loaded-checkpoint object that inference, explanations, export and the front ends share is
:class:`fracturescan.checkpoint.Checkpoint`, one level up.
"""

from fracturescan.models.builder import build_model, load_checkpoint, model_from_state
from fracturescan.models.checkpoint import (
    read_metadata,
    read_state_dict,
    resolve_checkpoint_dir,
    save_checkpoint,
    update_metadata,
)
from fracturescan.models.metadata import CheckpointMetadata
from fracturescan.models.model_card import render_model_card
from fracturescan.models.network import FractureNet
from fracturescan.models.preprocessing import Preprocessing, resolve_preprocessing
from fracturescan.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_DEFAULTS,
    ModelDefaults,
    available_architectures,
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
    "Preprocessing",
    "apply_weights",
    "available_architectures",
    "build_model",
    "imagenet_weights_path",
    "imagenet_weights_url",
    "load_checkpoint",
    "load_imagenet_state_dict",
    "model_defaults",
    "model_from_state",
    "read_metadata",
    "read_state_dict",
    "remap_legacy_densenet_keys",
    "render_model_card",
    "resolve_checkpoint_dir",
    "resolve_preprocessing",
    "save_checkpoint",
    "update_metadata",
]
