"""One preprocessing contract per architecture: resolved from the registry's defaults plus the
config's overrides, recorded in the checkpoint, and used by training, inference and explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tv_models

from fracturescan.checkpoint import Checkpoint
from fracturescan.config import TrainConfig
from fracturescan.errors import ConfigError
from fracturescan.explain import explain_image
from fracturescan.inference import Predictor
from fracturescan.models import available_architectures, resolve_preprocessing
from fracturescan.models.registry import HALF_NORMALISED
from fracturescan.training.loop import train
from tests.conftest import write_png


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("arch", available_architectures())
def test_every_architecture_resolves_to_its_pretrained_weights_transforms(arch: str) -> None:
    """Independent source: torchvision's own preset for the DEFAULT weights of each model."""
    preset = tv_models.get_model_weights(arch).DEFAULT.transforms()
    contract = resolve_preprocessing(arch)
    assert contract.input_size == preset.crop_size[0]
    if arch in HALF_NORMALISED:  # their forward() renormalises ImageNet inputs to 0.5/0.5 internally
        assert contract.mean == contract.std == (0.5, 0.5, 0.5)
    else:
        assert contract.mean == pytest.approx(tuple(preset.mean)) and contract.std == pytest.approx(tuple(preset.std))
    assert contract.channels == 3


def test_overrides_win_and_bad_values_are_refused_with_the_key_named() -> None:
    c = resolve_preprocessing("densenet121", input_size=64, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    assert (c.input_size, c.mean, c.std) == (64, (0.4, 0.4, 0.4), (0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match="vit_b_16 only takes 224 px"):
        resolve_preprocessing("vit_b_16", input_size=64)
    with pytest.raises(ConfigError, match="std values must be positive"):
        resolve_preprocessing("resnet18", std=(0.2, 0.0, 0.2))
    with pytest.raises(ConfigError, match="mean needs one value per input channel"):
        resolve_preprocessing("resnet18", mean=(0.5,))
    with pytest.raises(ConfigError, match="unknown architecture"):
        resolve_preprocessing("densenet12")


def test_normalise_applies_the_contract() -> None:
    c = resolve_preprocessing("inception_v3", input_size=80)
    px = torch.randint(0, 256, (2, 80, 80), dtype=torch.uint8)
    out = c.normalise(px)
    expected = (px.float() / 255 - 0.5) / 0.5  # inception's 0.5/0.5 statistics
    for channel in range(3):
        torch.testing.assert_close(out[:, channel], expected, rtol=0, atol=2 * torch.finfo(torch.float32).eps)


def _tiny_csv(root: Path, size: int, n_train: int) -> Path:
    rows = ["path,label,study_id,patient_id,split"]
    for i in range(n_train):
        label = i % 2
        path = write_png(root / f"img{i}.png", value=60 + 120 * label + i, size=(size + 7, size))
        rows.append(f"{path},{label},s{i},p{i},train")
    for i in range(2):
        path = write_png(root / f"val{i}.png", value=70 + 110 * (i % 2), size=(size, size))
        rows.append(f"{path},{i % 2},v{i},q{i},valid")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root / "data.csv"


# One of each kind of contract: ImageNet statistics at a chosen size; 0.5/0.5 statistics (the
# Inception family, here GoogLeNet); a network built for one input size (ViT), trained at that size.
@pytest.mark.parametrize("arch,size,expected_mean", [
    ("densenet121", 64, (0.485, 0.456, 0.406)),
    ("googlenet", 64, (0.5, 0.5, 0.5)),
    ("vit_b_32", None, (0.485, 0.456, 0.406)),
])
def test_architecture_trains_one_epoch_and_predicts_with_its_own_contract(
        tmp_path: Path, arch: str, size: int | None, expected_mean: tuple) -> None:
    # ViT-B/32 is large (88 M parameters) and takes only 224 px: fewer images keep it quick.
    data = _tiny_csv(tmp_path / "data", size or 224, n_train=12 if size else 6)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), arch=arch, weights="none", image_size=size,
                      epochs=1, batch_size=4, hidden=8, device="cpu", amp=False, holdout_fraction=0.34,
                      cache_dir=str(tmp_path / "cache"), body_part="all")
    result = train(cfg)
    checkpoint = Checkpoint.open(result.run_dir)
    contract = checkpoint.preprocessing
    assert contract == cfg.preprocessing()  # recorded exactly as resolved
    assert contract.input_size == (size or 224) and contract.mean == pytest.approx(expected_mean)
    predictor = Predictor(checkpoint, device="cpu", backend="torch")
    image = np.linspace(0, 1, 50 * 40, dtype=np.float32).reshape(50, 40)
    pixels = predictor.preprocess(image)
    assert pixels.shape == (contract.input_size, contract.input_size)
    with torch.no_grad():  # independent path: the network on the contract's own normalisation,
        # and the checkpoint's calibration temperature (fitted on the hold-out at the end of training)
        logit = predictor.model(contract.normalise(torch.from_numpy(pixels[None])))
        expected = torch.sigmoid(logit / predictor.rule.temperature).item()
    assert float(predictor.probabilities(pixels[None])[0]) == pytest.approx(expected, abs=1e-6)
    # explanations prepare the image the same way (same probability as prediction)
    assert explain_image(predictor, image).probability == pytest.approx(expected, abs=1e-5)


def test_two_openings_of_one_checkpoint_are_equal_and_a_retrained_one_is_not(tmp_path: Path) -> None:
    from fracturescan.models import build_model, save_checkpoint

    torch.manual_seed(0)
    directory = save_checkpoint(tmp_path / "run" / "best", build_model("resnet18", hidden=4), {"input_size": 32})
    first, second = Checkpoint.open(tmp_path / "run"), Checkpoint.open(directory)
    assert first == second and hash(first) == hash(second) and first.name == "run"
    save_checkpoint(directory, build_model("resnet18", hidden=4), {"input_size": 32})  # new weights, same place
    assert Checkpoint.open(directory) != first
