"""ONNX export and the ONNX Runtime backend of Predictor.

The DenseNet121 checks run at the real 224 px on phantom radiographs; refusal paths use a small
ResNet18 checkpoint so they stay fast.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from fracturescan import export as export_mod  # noqa: E402
from fracturescan.cli.main import main  # noqa: E402
from fracturescan.data.images import read_image, resize_square  # noqa: E402
from fracturescan.data.synth import generate_mura_phantoms  # noqa: E402
from fracturescan.errors import CheckpointError, MissingExtraError  # noqa: E402
from fracturescan.export import ONNX_FILE, OnnxExportError, export_onnx, load_onnx_model  # noqa: E402
from fracturescan.inference import Predictor  # noqa: E402
from fracturescan.models import build_model, read_metadata, save_checkpoint  # noqa: E402

from ..tolerances import (  # noqa: E402
    assert_within,
    forward_bound,
    logit_magnitude,
    network_shape,
    predictor_probability_bound,
)

torch.set_num_threads(1)


def _trained_looking(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give BatchNorm non-trivial statistics (ORT folds them into the convolutions, so identity
    BNs would hide folding errors) and widen the head so logits differ visibly between images."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        model.head.fc2.weight.mul_(50.0)
    return model.eval()


def _checkpoint(root: Path, arch: str, size: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = _trained_looking(build_model(arch, weights="none"), seed)
    return save_checkpoint(root / f"{arch}_{size}", model, {"input_size": size, "threshold": 0.5})


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three phantom radiograph PNGs (real files, decoded like user uploads)."""
    root = tmp_path_factory.mktemp("phantoms") / "MURA-v1.1"
    generate_mura_phantoms(root, studies=3, size=256, seed=3, valid_fraction=0.34)
    return sorted(root.rglob("*.png"))[:3]


@pytest.fixture(scope="module")
def densenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init, fixed-seed DenseNet121 checkpoint at 224 px, exported to ONNX."""
    directory = _checkpoint(tmp_path_factory.mktemp("ckpt"), "densenet121", 224)
    export_onnx(directory)
    return directory


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A ResNet18 checkpoint at 64 px without an ONNX export."""
    return _checkpoint(tmp_path, "resnet18", 64, seed=1)


def _pixels(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([resize_square(read_image(p), size) for p in paths])


def test_onnx_matches_torch_on_224px_radiographs(densenet: Path, phantoms: list[Path]) -> None:
    pixels = _pixels(phantoms, 224)
    x = Predictor.from_checkpoint(densenet, device="cpu", backend="torch").preprocessing.normalise(
        torch.from_numpy(pixels))
    model = Predictor.from_checkpoint(densenet, device="cpu", backend="torch").model
    with torch.no_grad():
        expected = model(x).numpy()
    actual = load_onnx_model(densenet)(x.numpy())
    assert actual.shape == (3,)
    # The comparison is only informative if the images give clearly different logits.
    assert np.ptp(expected) > 1e-2
    layers, fan_in = network_shape(model)
    assert_within(actual, expected, forward_bound(logit_magnitude(model, x), layers, fan_in), "ONNX vs torch logits")


def test_metadata_records_sha256_of_the_exported_file(densenet: Path) -> None:
    digest = hashlib.sha256((densenet / ONNX_FILE).read_bytes()).hexdigest()
    assert read_metadata(densenet).onnx_sha256 == digest
    # The weights hash is untouched by the export.
    assert read_metadata(densenet).sha256 == hashlib.sha256((densenet / "model.safetensors").read_bytes()).hexdigest()


def test_predictor_picks_onnx_when_exported_and_agrees_with_torch(densenet: Path, phantoms: list[Path]) -> None:
    fast = Predictor.from_checkpoint(densenet, device="cpu")
    slow = Predictor.from_checkpoint(densenet, device="cpu", backend="torch")
    assert (fast.backend, slow.backend) == ("onnx", "torch")
    p_fast = [fast.predict_image(p) for p in phantoms]
    p_slow = [slow.predict_image(p) for p in phantoms]
    bound = predictor_probability_bound(slow, phantoms)
    assert_within(p_fast, p_slow, bound, "ONNX vs torch probabilities")
    images, _ = fast.predict_paths(phantoms, batch_size=2, progress=False)
    assert_within([i.probability for i in images], p_slow, bound, "ONNX batches vs torch")


def test_predictor_uses_torch_without_export(small: Path) -> None:
    assert not (small / ONNX_FILE).exists()
    assert Predictor.from_checkpoint(small, device="cpu").backend == "torch"
    with pytest.raises(CheckpointError, match="no onnx_sha256|missing"):
        Predictor.from_checkpoint(small, device="cpu", backend="onnx")


def test_tampered_onnx_is_refused(densenet: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(densenet, tmp_path / "copy"))
    data = bytearray((copy / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="onnx_sha256"):
        Predictor.from_checkpoint(copy, device="cpu")
    # Forcing torch does not touch the ONNX file at all.
    assert Predictor.from_checkpoint(copy, device="cpu", backend="torch").backend == "torch"


def test_missing_onnxruntime(monkeypatch: pytest.MonkeyPatch, densenet: Path, small: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingExtraError, match=r"fracturescan\[onnx\]"):
        Predictor.from_checkpoint(densenet, device="cpu", backend="onnx")
    assert Predictor.from_checkpoint(densenet, device="cpu").backend == "torch"
    with pytest.raises(MissingExtraError):
        export_onnx(small)
    assert not (small / ONNX_FILE).exists()


def test_export_refuses_a_graph_that_disagrees(monkeypatch: pytest.MonkeyPatch, small: Path) -> None:
    real_call = export_mod.OnnxModel.__call__
    monkeypatch.setattr(export_mod.OnnxModel, "__call__", lambda self, x: real_call(self, x) + 1e-3)
    with pytest.raises(OnnxExportError, match="differs from torch"):
        export_onnx(small)
    assert sorted(p.name for p in small.iterdir()) == ["MODEL_CARD.md", "metadata.json", "model.safetensors"]
    assert read_metadata(small).onnx_sha256 == ""


def test_cli_export(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(small)]) == 1
    assert "--onnx" in capsys.readouterr().err
    assert main(["export", str(small), "--onnx", "--opset", "12"]) == 1
    assert "opset 12 is too old" in capsys.readouterr().err
    assert main(["export", str(small), "--onnx"]) == 0
    meta = json.loads((small / "metadata.json").read_text())
    assert meta["onnx_sha256"] == hashlib.sha256((small / ONNX_FILE).read_bytes()).hexdigest()
    assert Predictor.from_checkpoint(small, device="cpu").backend == "onnx"
