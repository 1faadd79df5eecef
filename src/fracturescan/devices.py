"""Which torch device to run on (``--device``)."""

from __future__ import annotations

import torch

from .errors import FracturescanError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise FracturescanError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FracturescanError("Device 'cuda' was requested but no CUDA GPU is available: use --device cpu.")
    return device
