"""Class-weighted binary cross-entropy, as in the MURA paper.

MURA weights each example by the share of the *other* class in the training images:
w_abnormal = |normal| / N and w_normal = |abnormal| / N, so both classes contribute equally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DatasetError


def class_weights(labels: torch.Tensor) -> tuple[float, float]:
    """Return (w_normal, w_abnormal) for a 0/1 label vector; both classes must be present."""
    n = labels.numel()
    n_pos = float(labels.sum())
    if n == 0 or n_pos in (0.0, float(n)):
        raise DatasetError(
            f"Training needs both normal and abnormal images; got {int(n_pos)} abnormal of {n}."
        )
    return n_pos / n, (n - n_pos) / n


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: tuple[float, float]) -> torch.Tensor:
    """Mean class-weighted BCE from logits (computed in float32 for stability)."""
    w_neg, w_pos = weights
    targets = targets.float()
    per_item = targets * w_pos + (1.0 - targets) * w_neg
    return F.binary_cross_entropy_with_logits(logits.float(), targets, weight=per_item)
