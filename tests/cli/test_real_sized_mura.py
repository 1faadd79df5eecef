"""The CLI on a MURA-layout tree of real-sized, mixed-format radiographs (cut from the real hand
CR in tests/samples/): it must read, train, evaluate and predict without crashing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracturescan.cli.main import main
from fracturescan.data.images import read_image

from ..conftest import make_mura_fixture
from ..real_samples import hand


@pytest.fixture(scope="module")
def real_sized_mura(tmp_path_factory: pytest.TempPathFactory) -> Path:
    radiograph = read_image(hand())  # 2500 x 2048 float in [0, 1]
    spec = {
        "train": [("XR_WRIST", f"patient{p:05d}", 1, p % 2, 2) for p in range(1, 9)],
        "valid": [("XR_WRIST", f"patient{p:05d}", 1, p % 2, 1) for p in range(20, 24)],
    }
    root = make_mura_fixture(tmp_path_factory.mktemp("real") / "MURA-v1.1", spec)
    rng = np.random.default_rng(0)
    for k, png in enumerate(sorted(root.rglob("image*.png"))):
        # crop / rescale the real radiograph differently for each file, in several PNG flavours
        h0, w0 = rng.integers(0, 400, 2)
        crop = radiograph[h0 : h0 + 1800 + 40 * k, w0 : w0 + 1400 + 30 * k]
        # compress_level=1: the files decode to the same pixels and are written several times faster
        if k % 3 == 0:  # 16-bit grayscale
            Image.fromarray((crop * 65535).astype(np.uint16)).save(png, compress_level=1)
        elif k % 3 == 1:  # 8-bit RGB (as some MURA files are)
            Image.fromarray((crop * 255).astype(np.uint8)).convert("RGB").save(png, compress_level=1)
        else:  # 8-bit grayscale, downscaled
            Image.fromarray((crop * 255).astype(np.uint8)).resize((crop.shape[1] // 3, crop.shape[0] // 3)).save(
                png, compress_level=1)
    return root


def test_cli_reads_trains_evaluates_predicts(real_sized_mura: Path, tmp_path: Path, capsys) -> None:
    assert main(["data-info", str(real_sized_mura)]) == 0
    assert "train: 8 studies, 16 images" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--data", str(real_sized_mura), "--out", str(run), "--weights", "none",
                 "--arch", "resnet18", "--image-size", "48", "--epochs", "1", "--batch-size", "8",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["evaluate", str(run), "--n-boot", "20"]) == 0
    metrics = json.loads((run / "eval_valid" / "metrics.json").read_text())
    assert metrics["image_level"]["metrics"]["n"] == 4
    out = tmp_path / "p.json"
    assert main(["predict", str(run), str(real_sized_mura / "valid"), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["images"]) == 4 and len(doc["studies"]) == 4
    assert all(0.0 <= i["probability"] <= 1.0 for i in doc["images"])
