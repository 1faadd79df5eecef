"""EnsembleNet: its logit is the logit of the mean of the members' calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fracturescan.models.ensemble import EnsembleNet


class FixedLogits(nn.Module):
    """A 'model' whose logit for image i is ``scale * x[i].sum() + bias`` (easy to compute by hand)."""

    def __init__(self, scale: float, bias: float) -> None:
        super().__init__()
        self.scale, self.bias = scale, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1).sum(1) + self.bias


def numpy_mean_probability(z: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """mean_i sigmoid(z_i / T_i) in float64, members along axis 0."""
    return np.mean(1.0 / (1.0 + np.exp(-z / temperatures[:, None])), axis=0)


def test_probability_is_the_mean_of_calibrated_member_probabilities() -> None:
    x = torch.linspace(-1, 1, 4 * 3 * 2 * 2).reshape(4, 3, 2, 2)
    members = [FixedLogits(0.7, 0.3), FixedLogits(-1.5, 1.0), FixedLogits(2.0, -0.5)]
    temps = np.array([1.0, 2.0, 0.5])
    net = EnsembleNet(members, temps.tolist())
    z = np.stack([m(x).numpy().astype(np.float64) for m in members])
    expected = numpy_mean_probability(z, temps)
    got = torch.sigmoid(net(x)).numpy()
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Not the mean of logits: that would give another answer on these inputs.
    assert np.abs(1 / (1 + np.exp(-np.mean(z / temps[:, None], 0))) - expected).max() > 1e-3


def test_extreme_logits_stay_finite_and_exact() -> None:
    x = torch.tensor([[[[1.0]]], [[[-1.0]]]])
    net = EnsembleNet([FixedLogits(200.0, 0.0), FixedLogits(300.0, 0.0)])
    logits = net(x)
    assert torch.isfinite(logits).all()
    # Both members certain: p rounds to 1 (and 0) yet the logit stays ordered and finite.
    assert logits[0] > 100 and logits[1] < -100
    # One certain member and one undecided: p = (1 + 0.5) / 2 = 0.75 exactly.
    mixed = EnsembleNet([FixedLogits(500.0, 0.0), FixedLogits(0.0, 0.0)])
    assert float(torch.sigmoid(mixed(x[:1]))) == pytest.approx(0.75, abs=1e-6)


@pytest.mark.parametrize("members, temps", [(1, None), (2, [1.0]), (2, [1.0, 0.0]), (2, [1.0, float("nan")])])
def test_bad_members_or_temperatures_are_refused(members: int, temps) -> None:
    with pytest.raises(ValueError):
        EnsembleNet([FixedLogits(1.0, 0.0) for _ in range(members)], temps)
