"""``EnsembleNet``: several trained models behind one logit, the mean of their probabilities.

For member logits ``z_i`` and calibration temperatures ``T_i`` (1 for an uncalibrated member),
the ensemble's probability is ``p = mean_i sigmoid(z_i / T_i)`` and ``forward`` returns its logit
``log p - log(1 - p)``, so everything that turns a model's logit into a probability (the
Predictor, ONNX Runtime, explanations) treats an ensemble exactly like a single model. Both
logs are computed as ``logsumexp(logsigmoid(±z_i / T_i)) - log N``, which stays finite where
``p`` rounds to 0 or 1 in float32.

Why probabilities and not logits: the mean probability is the ensemble's predictive
distribution (each member a sample of a plausible model); a mean of logits is a geometric vote
in which one over-confident member can overrule the others, and it is not calibrated even when
every member is.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleNet(nn.Module):
    """Members sharing one input (same size, channels and normalisation); one logit per image.

    Attributes:
        members: the member models, each mapping ``(N, C, H, W)`` to ``(N,)`` logits.
        temperatures: float tensor ``(M,)``; member ``i``'s calibrated probability is
            ``sigmoid(z_i / temperatures[i])``.
        arch: ``"ensemble"`` (what metadata and reports call the architecture).
    """

    arch = "ensemble"

    def __init__(self, members: Sequence[nn.Module], temperatures: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        temps = [1.0] * len(members) if temperatures is None else [float(t) for t in temperatures]
        if len(temps) != len(members) or not all(math.isfinite(t) and t > 0 for t in temps):
            raise ValueError(f"need one positive, finite temperature per member, got {temps}")
        self.members = nn.ModuleList(members)
        self.register_buffer("temperatures", torch.tensor(temps, dtype=torch.float32))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated member logits ``z_i / T_i``, shape ``(M, N)``."""
        logits = torch.stack([member(x).reshape(-1).float() for member in self.members])
        return logits / self.temperatures.view(-1, 1)

    @staticmethod
    def combine(z: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """Logit of ``mean_i sigmoid(z_i)`` for calibrated member logits ``z`` of shape ``(M, N)``;
        ``count`` is M (given by ``forward`` so ONNX tracing sees a plain constant)."""
        log_n = math.log(count if count is not None else z.shape[0])
        log_p = torch.logsumexp(F.logsigmoid(z), dim=0) - log_n
        log_q = torch.logsumexp(F.logsigmoid(-z), dim=0) - log_n
        return log_p - log_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of the mean member probability, shape ``(N,)``."""
        return self.combine(self.member_logits(x), len(self.members))
