"""Tests for --weights imagenet|none|PATH (all offline, against a fake torch hub cache)."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tv_models
from safetensors.torch import save_file

from fracturescan.errors import CheckpointError, WeightsNotFoundError
from fracturescan.models import build_model, imagenet_weights_path, remap_legacy_densenet_keys
from fracturescan.models.checkpoint import save_checkpoint

from ..tolerances import assert_within, sum_bound

torch.set_num_threads(1)


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME; torch.hub must resolve its dir from the environment."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return home


def _reference_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return tv_models.get_model(arch, weights=None).state_dict()


def _cache_file(home: Path, arch: str) -> Path:
    name = Path(urlparse(tv_models.get_model_weights(arch).DEFAULT.url).path).name
    path = home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _to_legacy_densenet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision format: 'norm.1' instead of 'norm1' in dense layers, no BN counters."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if ".denselayer" in key:
            for word in ("norm", "relu", "conv"):
                for digit in "12":
                    key = key.replace(f".{word}{digit}.", f".{word}.{digit}.")
        out[key] = value
    return out


def _assert_backbone_equals(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> int:
    ours = model.features.state_dict()
    compared = 0
    for key, value in state.items():
        if key.split(".")[0] in {"classifier", "fc"}:
            continue
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
        compared += 1
    return compared


def test_cache_path_is_torch_home_hub_checkpoints(torch_home: Path) -> None:
    expected = torch_home / "hub" / "checkpoints" / "densenet121-a639ec97.pth"
    assert imagenet_weights_path("densenet121") == expected


def test_missing_imagenet_file_names_path_and_url(torch_home: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        build_model("densenet121", weights="imagenet")
    message = str(info.value)
    assert str(torch_home / "hub" / "checkpoints" / "densenet121-a639ec97.pth") in message
    assert "https://download.pytorch.org/models/densenet121-a639ec97.pth" in message


def test_imagenet_densenet_current_format(torch_home: Path) -> None:
    state = _reference_state("densenet121")
    torch.save(state, _cache_file(torch_home, "densenet121"))
    model = build_model("densenet121", weights="imagenet")
    assert _assert_backbone_equals(model, state) == len(model.features.state_dict())


def test_imagenet_densenet_legacy_key_format(torch_home: Path) -> None:
    state = _reference_state("densenet121")
    legacy = _to_legacy_densenet(state)
    assert any(".norm.1." in k for k in legacy)  # the test really exercises the old format
    torch.save(legacy, _cache_file(torch_home, "densenet121"))
    model = build_model("densenet121", weights="imagenet")
    weights_only = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert _assert_backbone_equals(model, weights_only) > 300


def test_legacy_remap_hand_cases() -> None:
    t = torch.zeros(1)
    old = {
        "features.denseblock1.denselayer1.norm.1.weight": t,
        "features.denseblock4.denselayer16.conv.2.weight": t,
        "features.norm5.bias": t,
        "features.transition1.conv.weight": t,
    }
    assert sorted(remap_legacy_densenet_keys(old)) == sorted([
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock4.denselayer16.conv2.weight",
        "features.norm5.bias",
        "features.transition1.conv.weight",
    ])


def test_imagenet_generic_arch_and_grey_input_adaptation(torch_home: Path) -> None:
    state = _reference_state("resnet18")
    torch.save(state, _cache_file(torch_home, "resnet18"))
    rgb = build_model("resnet18", weights="imagenet").eval()
    grey = build_model("resnet18", weights="imagenet", in_channels=1).eval()
    two = build_model("resnet18", weights="imagenet", in_channels=2).eval()
    assert _assert_backbone_equals(rgb, state) == len(rgb.features.state_dict())
    image = torch.randn(2, 1, 48, 48)
    # Only the input convolution differs; every other tensor is loaded unchanged.
    conv_key = next(k for k, v in rgb.features.state_dict().items() if v.dim() == 4)
    for model in (grey, two):
        theirs = model.features.state_dict()
        for key, value in rgb.features.state_dict().items():
            if key != conv_key:
                torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)
    conv = rgb.features.get_submodule(conv_key.removesuffix(".weight"))
    with torch.no_grad():
        expected = conv(image.expand(-1, 3, -1, -1))
        # A grey pixel seen as (x, x, x) by the RGB kernel w gives sum_c w_c x: the same sum as the
        # summed kernel on x, regrouped. Bound: each side is within gamma(3 k^2 + 3) of the exact
        # sum of |w||x| (3 k^2 products, plus the 2 additions and 1 division building the kernel).
        magnitude = F.conv2d(image.abs().expand(-1, 3, -1, -1), conv.weight.abs(), stride=conv.stride,
                             padding=conv.padding)
        bound = sum_bound(magnitude, n=3 * conv.weight[0, 0].numel(), extra_ops=4)
        for model, channels in ((grey, 1), (two, 2)):
            adapted = model.features.get_submodule(conv_key.removesuffix(".weight"))
            assert_within(adapted(image.expand(-1, channels, -1, -1)), expected, bound, f"{channels}-channel conv")
            assert model.features(image.expand(-1, channels, -1, -1)).shape == rgb.features(
                image.expand(-1, 3, -1, -1)).shape


def test_path_backbone_safetensors_and_pth(tmp_path: Path) -> None:
    state = _reference_state("resnet18")
    save_file(state, str(tmp_path / "backbone.safetensors"))
    torch.save(state, tmp_path / "backbone.pth")
    for name in ("backbone.safetensors", "backbone.pth"):
        model = build_model("resnet18", weights=str(tmp_path / name))
        assert _assert_backbone_equals(model, state) == len(model.features.state_dict())


def test_path_full_model_and_checkpoint_dir(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = build_model("mobilenet_v3_small", hidden=8).eval()
    save_file(source.state_dict(), str(tmp_path / "full.safetensors"))
    save_checkpoint(tmp_path / "ckpt", source, {})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
        for spec in (tmp_path / "full.safetensors", tmp_path / "ckpt"):
            model = build_model("mobilenet_v3_small", hidden=8, weights=str(spec)).eval()
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="hidden=8"):
        build_model("mobilenet_v3_small", hidden=16, weights=str(tmp_path / "ckpt"))


def test_wrong_architecture_file_is_rejected(tmp_path: Path) -> None:
    torch.save(_reference_state("resnet18"), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        build_model("densenet121", weights=str(tmp_path / "r18.pth"))


class _Booby:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickle_with_code_is_never_executed(tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Booby(control), protocol=2))
    assert control.exists()  # the payload is live: plain unpickling runs it
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"conv1.weight": _Booby(marker)}, protocol=2)
    (tmp_path / "evil.pth").write_bytes(payload)
    with pytest.raises(CheckpointError):
        build_model("resnet18", weights=str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_missing_path_and_none() -> None:
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        build_model("resnet18", weights="/nonexistent/weights.pth")
    torch.manual_seed(0)
    a = build_model("resnet18", weights="none")
    torch.manual_seed(0)
    b = build_model("resnet18", weights="none")
    torch.testing.assert_close(a.state_dict(), b.state_dict())
