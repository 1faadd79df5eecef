"""Build a :class:`~fracturescan.models.network.FractureNet` and give it its weights: initial ones
(``none``, ``imagenet``, a local file) for training, or a verified checkpoint's for inference.

This sits above the registry, the network, the weights and the checkpoint files, and below
:class:`fracturescan.checkpoint.Checkpoint`.
"""

from __future__ import annotations

import torch

from fracturescan.errors import CheckpointError
from fracturescan.models.checkpoint import read_state_dict
from fracturescan.models.metadata import CheckpointMetadata
from fracturescan.models.network import FractureNet
from fracturescan.models.weights import apply_weights


def build_model(
    arch: str = "densenet121",
    *,
    weights: str = "none",
    hidden: int = 256,
    dropout: float = 0.5,
    in_channels: int = 3,
) -> FractureNet:
    """Build a :class:`FractureNet` and initialise it.

    Args:
        arch: any torchvision classification model name (``available_architectures()``).
        weights: ``"none"`` (random init), ``"imagenet"`` (torchvision's default ImageNet weights
            from the torch hub cache, downloaded and hash-checked once unless offline) or a path
            to a ``.safetensors`` / ``.pth`` state dict or a fracturescan checkpoint directory.
        hidden: width of the head's hidden layer.
        dropout: dropout probability in the head.
        in_channels: input channels; 3-channel pretrained input kernels are summed and shared
            across the new channels so a replicated grey image gives the same response.

    Raises:
        ConfigError: unknown architecture or invalid hyper-parameter.
        WeightsNotFoundError: the requested weights are neither cached nor downloadable.
        CheckpointError: a weights file is unreadable or does not fit the model.
    """
    model = FractureNet(arch, hidden=hidden, dropout=dropout, in_channels=in_channels)
    apply_weights(model, weights)
    return model


def model_from_state(state: dict[str, torch.Tensor], meta: CheckpointMetadata, *,
                     source: str = "the checkpoint") -> FractureNet:
    """The network ``meta`` describes, with ``state`` loaded strictly, in eval mode on the CPU.

    Raises:
        CheckpointError: the weights do not fit the described network.
    """
    model = FractureNet(meta.arch, hidden=meta.hidden, dropout=meta.dropout, in_channels=meta.channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {source} do not fit a {meta.arch} model: {exc}") from exc
    return model.eval()


def load_checkpoint(directory, *, map_location: str | torch.device = "cpu") -> tuple[FractureNet, CheckpointMetadata]:
    """Rebuild the model a checkpoint directory describes, with its verified weights, in eval mode.

    Raises:
        CheckpointError: missing/corrupt/tampered checkpoint or weights that do not fit.
    """
    state, meta = read_state_dict(directory)
    return model_from_state(state, meta, source=str(directory)).to(torch.device(map_location)), meta
