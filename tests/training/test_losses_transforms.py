"""Class weighting, weighted BCE and batched augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fracturescan.config import AugmentConfig
from fracturescan.data.transforms import augment_batch, normalise
from fracturescan.models.registry import IMAGENET_MEAN, IMAGENET_STD
from fracturescan.errors import DatasetError
from fracturescan.training.losses import class_weights, weighted_bce


def test_class_weights_follow_mura_paper() -> None:
    labels = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=torch.float32)  # 2 abnormal of 10
    w_neg, w_pos = class_weights(labels)
    assert (w_neg, w_pos) == pytest.approx((0.2, 0.8))
    # both classes then contribute equally to the loss
    assert 2 * w_pos == pytest.approx(8 * w_neg)
    with pytest.raises(DatasetError, match="both normal and abnormal"):
        class_weights(torch.zeros(5))


def test_weighted_bce_matches_hand_computation() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5])
    targets = torch.tensor([1.0, 0.0, 0.0])
    w = (0.3, 0.7)
    p = [1 / (1 + math.exp(-z)) for z in logits.tolist()]
    expected = -(0.7 * math.log(p[0]) + 0.3 * math.log(1 - p[1]) + 0.3 * math.log(1 - p[2])) / 3
    assert weighted_bce(logits, targets, w).item() == pytest.approx(expected, rel=1e-6)


def test_normalise_matches_manual() -> None:
    px = torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8)
    out = normalise(px, IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (2, 3, 8, 8)
    for c in range(3):
        manual = (px.float() / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(out[:, c], manual, atol=1e-6)


def test_identity_augmentation_is_identity() -> None:
    px = torch.randint(0, 256, (4, 16, 16), dtype=torch.uint8)
    out = augment_batch(px, AugmentConfig(hflip=0.0, rotation=0.0, brightness=0.0, contrast=0.0))
    assert torch.allclose(out[:, 0], px.float() / 255, atol=1e-5)


def test_flip_only_mirrors() -> None:
    px = torch.randint(0, 256, (3, 10, 12), dtype=torch.uint8)
    out = augment_batch(px, AugmentConfig(hflip=1.0, rotation=0.0, brightness=0.0, contrast=0.0))
    assert torch.allclose(out[:, 0], px.flip(-1).float() / 255, atol=1e-5)


def test_rotation_turns_an_off_centre_spot() -> None:
    # A bright spot right of centre must move off its row when rotated by at least 10 degrees.
    px = torch.zeros((1, 33, 33), dtype=torch.uint8)
    px[0, 16, 28] = 255
    for seed in range(5):
        out = augment_batch(px, AugmentConfig(hflip=0.0, rotation=30.0, brightness=0.0, contrast=0.0),
                            torch.Generator().manual_seed(seed))[0, 0]
        y, x = divmod(int(out.argmax()), 33)
        angle = math.degrees(math.atan2(y - 16, x - 16))
        assert abs(angle) <= 30.5 + 5  # within the configured range (pixel rounding)
        assert math.hypot(y - 16, x - 16) == pytest.approx(12, abs=1.5)  # rotation keeps the radius


def test_augmentation_is_seeded_and_varies() -> None:
    px = torch.randint(0, 256, (8, 16, 16), dtype=torch.uint8)
    cfg = AugmentConfig()
    a = augment_batch(px, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(px, cfg, torch.Generator().manual_seed(1))
    c = augment_batch(px, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_contrast_and_brightness_statistics() -> None:
    # With flip/rotation off, a mid-grey image with texture keeps its mean up to the brightness
    # shift, and its spread scales by the contrast factor.
    rng = np.random.default_rng(0)
    px = torch.from_numpy(rng.integers(96, 160, (64, 32, 32), dtype=np.uint8))
    out = augment_batch(px, AugmentConfig(hflip=0, rotation=0, brightness=0.1, contrast=0.3),
                        torch.Generator().manual_seed(0))[:, 0]
    src = px.float() / 255
    shift = out.mean((1, 2)) - src.mean((1, 2))
    ratio = out.std((1, 2)) / src.std((1, 2))
    assert shift.abs().max() <= 0.1 + 1e-4 and shift.std() > 0.02
    assert ratio.min() >= 0.7 - 1e-3 and ratio.max() <= 1.3 + 1e-3


def test_random_erasing_blanks_one_rectangle_per_image() -> None:
    rng = np.random.default_rng(1)
    px = torch.from_numpy(rng.integers(0, 256, (32, 40, 40), dtype=np.uint8))
    base = AugmentConfig(hflip=0, rotation=0, brightness=0, contrast=0, erase=0.0)
    plain = augment_batch(px, base, torch.Generator().manual_seed(3))[:, 0]
    erased = augment_batch(px, AugmentConfig(hflip=0, rotation=0, brightness=0, contrast=0, erase=1.0),
                           torch.Generator().manual_seed(3))[:, 0]
    assert torch.allclose(plain, px.float() / 255, atol=1e-5)  # erase=0 leaves images alone
    for before, after in zip(plain, erased):
        changed = (before - after).abs() > 1e-6
        ys, xs = torch.nonzero(changed, as_tuple=True)
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        box = after[top : bottom + 1, left : right + 1]
        assert torch.allclose(box, box[0, 0].expand_as(box))  # one constant-filled rectangle
        assert 0.01 <= box.numel() / after.numel() <= 0.21


def _spot_centre(img: torch.Tensor) -> tuple[float, float]:
    """Intensity-weighted centre (row, col) of a 2-D image."""
    h, w = img.shape
    total = float(img.sum())
    rows = float((img.sum(1) * torch.arange(h)).sum()) / total
    cols = float((img.sum(0) * torch.arange(w)).sum()) / total
    return rows, cols


def test_translation_moves_content_within_range() -> None:
    # A centred square must move by at most translate x side along each axis, and actually move.
    px = torch.zeros((64, 41, 41), dtype=torch.uint8)
    px[:, 16:25, 16:25] = 255
    cfg = AugmentConfig(hflip=0.0, rotation=0.0, brightness=0.0, contrast=0.0, translate=0.1)
    out = augment_batch(px, cfg, torch.Generator().manual_seed(3))
    shifts = [(r - 20, c - 20) for r, c in (_spot_centre(out[i, 0]) for i in range(64))]
    assert max(max(abs(dr), abs(dc)) for dr, dc in shifts) <= 0.1 * 41 + 0.5
    assert max(abs(dc) for _, dc in shifts) > 0.05 * 41  # the range is used, not just jitter
    assert max(abs(dr) for dr, _ in shifts) > 0.05 * 41
    # A pure shift keeps the square's size (interior pixels stay fully bright).
    areas = (out[:, 0] > 0.5).sum(dim=(1, 2)).float()
    assert torch.all((areas >= 64) & (areas <= 100))


def test_zoom_scales_area_within_range() -> None:
    px = torch.zeros((64, 65, 65), dtype=torch.uint8)
    px[:, 22:43, 22:43] = 255  # 21 x 21 square at the centre
    cfg = AugmentConfig(hflip=0.0, rotation=0.0, brightness=0.0, contrast=0.0, scale=0.2)
    out = augment_batch(px, cfg, torch.Generator().manual_seed(5))
    side = torch.sqrt(out[:, 0].sum(dim=(1, 2)))  # total intensity = area of the (blurred) square
    ratio = side / 21.0
    assert float(ratio.min()) >= 0.8 - 0.03 and float(ratio.max()) <= 1.2 + 0.03
    assert float(ratio.max() - ratio.min()) > 0.2  # zooms both in and out
    for i in range(64):  # zoom is about the centre: the square stays centred
        r, c = _spot_centre(out[i, 0])
        assert abs(r - 32) < 0.6 and abs(c - 32) < 0.6


def test_shift_and_zoom_off_leave_the_random_stream_unchanged() -> None:
    # Old configurations (no translate/scale) must reproduce their augmentation exactly.
    px = torch.randint(0, 256, (8, 32, 32), dtype=torch.uint8)
    a = augment_batch(px, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(px, AugmentConfig(translate=0.0, scale=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = augment_batch(px, AugmentConfig(translate=0.1), torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)
