"""Test-time augmentation: which views a checkpoint gets, what each view is, and the mean over
views checked against a hand computation on a model whose answer we can work out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fracturescan.inference import predict_pixels
from fracturescan.models.preprocessing import Preprocessing
from fracturescan.tta import TestTimeAugmentation, View, apply_view, views_for

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LeftHalf(nn.Module):
    """logit = mean of the left half of channel 0 of the normalised image - 0.3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :, : x.shape[-1] // 2].mean(dim=(1, 2)) - 0.3


def by_hand(grey: float) -> float:
    """LeftHalf's probability for a left half of uniform uint8 value ``grey``."""
    return 1.0 / (1.0 + np.exp(-((grey / 255.0 - MEAN[0]) / STD[0] - 0.3)))


def predict(pixels: np.ndarray) -> np.ndarray:
    return predict_pixels(LeftHalf(), pixels, preprocessing=Preprocessing(pixels.shape[-1], MEAN, STD),
                          device=torch.device("cpu"))


def halves(left: int, right: int, size: int = 16) -> np.ndarray:
    image = np.full((1, size, size), right, np.uint8)
    image[:, :, : size // 2] = left
    return image


@pytest.mark.parametrize("config, expected", [
    ({}, ["identity", "flip"]),
    ({"augment": {"hflip": 0.5, "rotation": 0.0}}, ["identity", "flip"]),
    ({"augment": {"rotation": 10}}, ["identity", "flip", "rotate+5", "rotate-5"]),
    ({"augment": {"rotation": "not a number"}}, ["identity", "flip"]),
    (None, ["identity", "flip"]),
])
def test_views_follow_the_training_augmentation(config, expected) -> None:
    assert [v.name for v in views_for(config)] == expected


def test_views_are_exact_flips_and_rotations() -> None:
    x = np.random.default_rng(0).integers(0, 256, (3, 10, 10), dtype=np.uint8)
    np.testing.assert_array_equal(apply_view(x, View(flip=True)), x[:, :, ::-1])
    np.testing.assert_array_equal(apply_view(x, View()), x)
    # A quarter turn maps pixel centres onto pixel centres: exactly numpy's counter-clockwise rot90.
    np.testing.assert_array_equal(apply_view(x, View(degrees=90)), np.rot90(x, 1, axes=(1, 2)))
    np.testing.assert_array_equal(apply_view(x, View(degrees=-90)), np.rot90(x, -1, axes=(1, 2)))
    # A small rotation of a uniform image changes only the corners (zeros come in from outside).
    flat = apply_view(np.full((1, 32, 32), 200, np.uint8), View(degrees=5))
    assert (flat[0, 8:24, 8:24] == 200).all() and flat[0, 0, 0] < 200


def test_flip_symmetric_input_gets_the_plain_probability() -> None:
    tta = TestTimeAugmentation((View(), View(flip=True)))
    image = halves(180, 180)
    assert tta.probabilities(predict, image)[0] == pytest.approx(predict(image)[0], abs=1e-12)
    assert predict(image)[0] == pytest.approx(by_hand(180), abs=1e-6)


def test_asymmetric_input_gets_the_mean_of_both_sides() -> None:
    tta = TestTimeAugmentation((View(), View(flip=True)))
    image = halves(200, 40)  # the flip shows the model the dark side
    got = tta.probabilities(predict, image)[0]
    assert got == pytest.approx((by_hand(200) + by_hand(40)) / 2, abs=1e-6)
    assert abs(got - predict(image)[0]) > 0.1  # TTA changed the answer
    # A counter-clockwise quarter turn brings the top half (rows 0-7) to the left.
    image = np.zeros((1, 16, 16), np.uint8)
    image[:, :8], image[:, 8:] = 30, 220
    turned = TestTimeAugmentation((View(), View(degrees=90))).probabilities(predict, image)[0]
    assert turned == pytest.approx((by_hand((30 + 220) / 2) + by_hand(30)) / 2, abs=1e-6)
