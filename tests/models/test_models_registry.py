"""Tests for the backbone registry and FractureNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tv_models

from fracturescan.errors import ConfigError
from fracturescan.models import MODEL_DEFAULTS, FractureNet, build_model, model_defaults
from fracturescan.models.weights import load_backbone_state_dict

torch.set_num_threads(1)


def _seeded_torchvision(arch: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return tv_models.get_model(arch, weights=None, **kwargs).eval()


def test_forward_is_pool_then_mlp_head_with_one_logit_per_image() -> None:
    torch.manual_seed(1)
    model = build_model("densenet121", hidden=16, dropout=0.5).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        fmap = model.features(x)
        head = model.head
        # Hand-written head: mean over space, Linear, ReLU, (dropout off in eval), Linear.
        pooled = fmap.mean(dim=(2, 3))
        expected = head.fc2(torch.relu(head.fc1(pooled))).squeeze(1)
    assert logits.shape == (3,)
    assert fmap.shape[1] == model.feature_channels == 1024
    torch.testing.assert_close(logits, expected)


def test_densenet_features_include_final_norm_and_relu() -> None:
    reference = _seeded_torchvision("densenet121")
    model = FractureNet("densenet121").eval()
    load_backbone_state_dict(model, reference.state_dict(), source="test")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.features(x)
        theirs = F.relu(reference.features(x))  # torchvision applies this ReLU in forward()
    torch.testing.assert_close(ours, theirs)
    assert float(ours.min()) >= 0.0
    assert isinstance(model.cam_layer, torch.nn.ReLU)


@pytest.mark.parametrize(
    "arch",
    ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "efficientnet_b0",
     "regnet_x_400mf", "mnasnet0_5", "googlenet"],
)
def test_generic_rule_feeds_the_head_what_torchvision_fed_its_classifier(arch: str) -> None:
    kwargs = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    reference = _seeded_torchvision(arch, **kwargs)
    model = FractureNet(arch).eval()
    load_backbone_state_dict(model, reference.state_dict(), source="test")
    name = next(n for n in ("fc", "classifier") if hasattr(reference, n))
    seen: list[torch.Tensor] = []
    getattr(reference, name).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference(x)
        fmap = model.features(x)
    fed = seen[0]
    if fed.dim() == 4 and fed.shape[-1] > 1:  # SqueezeNet classifies the map itself
        torch.testing.assert_close(fed, fmap)
    else:
        torch.testing.assert_close(fed.flatten(1), fmap.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    assert fmap.shape[1] == model.feature_channels


def test_cam_layer_outputs_the_feature_map() -> None:
    model = FractureNet("resnet18").eval()
    assert model.cam_layer is model.features.layer4
    captured: list[torch.Tensor] = []
    model.cam_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fmap = model.features(x)
    torch.testing.assert_close(captured[0], fmap)


def test_in_channels_changes_the_first_convolution() -> None:
    model = build_model("resnet18", in_channels=1).eval()
    assert model.features.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2,)


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resnet5O")
    message = str(info.value)
    assert "resnet50" in message and "densenet121" in message


@pytest.mark.parametrize("kwargs", [{"hidden": 0}, {"dropout": 1.0}, {"in_channels": 0}])
def test_invalid_hyperparameters_raise_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        build_model("resnet18", **kwargs)


def test_model_defaults_follow_torchvision_presets() -> None:
    dense = model_defaults("densenet121")
    assert dense.input_size == 224
    assert dense.mean == (0.485, 0.456, 0.406) and dense.std == (0.229, 0.224, 0.225)
    preset = tv_models.get_model_weights("efficientnet_b3").DEFAULT.transforms()
    assert MODEL_DEFAULTS["efficientnet_b3"].input_size == preset.crop_size[0]
    assert set(tv_models.list_models(module=tv_models)) == set(MODEL_DEFAULTS)
