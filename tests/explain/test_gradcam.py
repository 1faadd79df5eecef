"""Grad-CAM against an independent autograd computation, plus its hygiene and geometry."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fracturescan.explain import explain_image, grad_cam, heatmap_peak, select_cam_layer, upsample
from fracturescan.inference import Predictor
from fracturescan.models.checkpoint import save_checkpoint
from fracturescan.models.network import FractureNet

from ..tolerances import assert_within, probability_bound, sum_bound


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class TinyNet(nn.Module):
    """conv -> ReLU(inplace) -> conv -> ReLU (the cam layer) -> a head that is NOT just pooling."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, stride=2, padding=1), relu1=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(6, 5, 3, stride=2, padding=1), relu2=nn.ReLU()))
        # A spatially varying head (flatten + linear): the gradient differs per cell, so the
        # spatial mean of the gradient matters and a wrong implementation would show.
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(5 * 4 * 4, 1))

    @property
    def cam_layer(self) -> nn.Module:
        return self.features.relu2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def _manual_cam(feats: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM by its definition, ReLU(sum_c mean_ij(dlogit/dA_cij) * A_c), and the rounding
    bound between two float32 evaluations of it from the same A and gradients: the weights are
    H*W-term means, the map a C-term weighted sum (ReLU only brings values closer)."""
    grads = torch.autograd.grad(logits.sum(), feats)[0]  # images are independent: sum is fine
    weights = grads.mean(dim=(2, 3), keepdim=True)
    n_cells, n_channels = feats.shape[2] * feats.shape[3], feats.shape[1]
    weight_error = sum_bound(grads.abs().mean(dim=(2, 3), keepdim=True), n=n_cells, extra_ops=1)
    bound = sum_bound((weights.abs() * feats.abs()).sum(dim=1), n=n_channels) + (weight_error * feats.abs()).sum(dim=1)
    return F.relu((weights * feats).sum(dim=1)).detach(), bound.detach()


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def test_tiny_model_matches_autograd_definition() -> None:
    model = TinyNet().eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    feats = model.features(x)
    expected, bound = _manual_cam(feats, model.head(feats).squeeze(1))
    cams, logits = grad_cam(model, model.cam_layer, x)
    assert cams.shape == (3, 4, 4)
    assert expected.abs().max() > 0  # the comparison is not between two zero maps
    assert_within(cams, expected, bound, "Grad-CAM")
    torch.testing.assert_close(logits, model(x).detach())


def _densenet_predictor(size: int, where: Path) -> Predictor:
    torch.manual_seed(3)
    model = FractureNet("densenet121", hidden=16)
    directory = where / "ckpt"
    return Predictor.from_checkpoint(save_checkpoint(directory, model, {"input_size": size, "threshold": 0.5}),
                                     device="cpu")


def _image(h: int = 50, w: int = 37) -> np.ndarray:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(0.3 + 0.5 * np.exp(-((yy - 30) ** 2 + (xx - 10) ** 2) / 40.0) + 0.05 * rng.random((h, w)),
                   0, 1).astype(np.float32)


def test_densenet_cam_layer_matches_manual_and_leaves_model_clean(tmp_path: Path) -> None:
    # DenseNet's dense layers use in-place ReLUs; the cam layer (ReLU after norm5) must not be.
    predictor = _densenet_predictor(224, tmp_path)
    model = predictor.model
    model.train()  # explain must put (and leave) the model in eval mode
    image = _image(230, 190)
    exp = explain_image(predictor, image, layer=model.cam_layer)
    assert not model.training
    assert _hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())

    x = torch.from_numpy(predictor.preprocess(image)[None])
    from fracturescan.data.transforms import normalise

    x = normalise(x, tuple(predictor.metadata.mean), tuple(predictor.metadata.std))
    feats = model.features(x)  # features[-1] is the cam layer, so this IS its output
    logit = model.head(feats).squeeze(1)
    expected, bound = _manual_cam(feats, logit)
    assert exp.cam.shape == (7, 7)
    assert_within(exp.cam, expected[0], bound[0], "DenseNet Grad-CAM")
    p = float(predictor.probabilities(predictor.preprocess(image)[None])[0])
    assert abs(exp.probability - p) <= float(probability_bound(model, x)[0])


def test_chosen_intermediate_layer_matches_manual_split_forward(tmp_path: Path) -> None:
    predictor = _densenet_predictor(64, tmp_path)
    model = predictor.model
    name, layer = select_cam_layer(model, 64)
    assert name.endswith("denseblock2")
    image = _image()
    exp = explain_image(predictor, image)
    assert exp.layer == name and exp.cam.shape == (8, 8)

    from fracturescan.data.transforms import normalise

    x = normalise(torch.from_numpy(predictor.preprocess(image)[None]), tuple(predictor.metadata.mean),
                  tuple(predictor.metadata.std))
    trunk = model.features[0]
    with torch.no_grad():  # run the trunk by hand up to the chosen stage, no hooks involved
        for child in trunk.children():
            x = child(x)
            if child is layer:
                break
    stage = x.clone().requires_grad_(True)
    rest, after = stage, False
    for child in trunk.children():
        if after:
            rest = child(rest)
        after = after or child is layer
    logit = model.head(model.features[1](rest)).squeeze(1)
    expected, bound = _manual_cam(stage, logit)
    assert_within(exp.cam, expected[0], bound[0], "intermediate-layer Grad-CAM")


def test_heatmap_is_original_size_in_unit_range(tmp_path: Path) -> None:
    predictor = _densenet_predictor(64, tmp_path)
    image = _image(50, 37)
    exp = explain_image(predictor, image)
    assert exp.heatmap.shape == (50, 37) and exp.heatmap.dtype == np.float32
    assert exp.model_heatmap.shape == (64, 64)
    assert exp.heatmap.min() >= 0.0
    if exp.cam.max() > 0:
        assert exp.heatmap.max() == pytest.approx(1.0)
        assert exp.heatmap[exp.peak] == pytest.approx(1.0)


def test_select_cam_layer_keeps_cam_layer_at_native_size() -> None:
    model = FractureNet("densenet121", hidden=8).eval()
    assert select_cam_layer(model, 224)[1] is model.cam_layer
    name, _ = select_cam_layer(model, 128)
    assert name.endswith("denseblock3")  # 8x8 there; the final map would be 4x4


def test_upsample_hand_computed() -> None:
    cam = np.array([[0.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    up = upsample(cam, (4, 4))
    # align_corners=False: output pixel i samples input coordinate (i + 0.5) / 2 - 0.5.
    # pixel 3 -> 1.25 (clamped to 1, the 2.0 cell); pixel 2 -> 0.75; pixel 1 -> 0.25.
    assert up[3, 3] == pytest.approx(1.0)
    assert up[2, 2] == pytest.approx(0.75 * 0.75)
    assert up[1, 1] == pytest.approx(0.25 * 0.25)
    assert up[0, 0] == 0.0 and up[0, 3] == 0.0


def test_peak_is_centre_of_flat_maximum_not_its_corner() -> None:
    up = upsample(np.array([[0.0, 0.0], [0.0, 1.0]], dtype=np.float32), (8, 8))
    # Input coordinate >= 1 (the max, flat) for output pixels 6 and 7: the centre is 6.5.
    assert np.argwhere(up == up.max()).min(axis=0).tolist() == [6, 6]
    assert heatmap_peak(up) in {(6, 6), (6, 7), (7, 6), (7, 7)}
    assert heatmap_peak(np.zeros((5, 5), np.float32)) is None
    assert upsample(np.zeros((2, 2), np.float32), (3, 3)).max() == 0.0
