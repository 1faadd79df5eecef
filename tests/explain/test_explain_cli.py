"""``fracturescan explain``: overlays on disk, one-line errors, the pointing-game JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fracturescan.cli.main import app
from fracturescan.models.checkpoint import CheckpointMetadata, save_checkpoint
from fracturescan.models.network import FractureNet


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = FractureNet("resnet18", hidden=8)  # small and quick; the CLI is what is tested
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    return save_checkpoint(folder, model, CheckpointMetadata(input_size=32, threshold=0.5, synthetic=True))


def _png(path: Path, h: int = 45, w: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.add.outer(np.arange(h), np.arange(w)) * 3 % 256).astype(np.uint8)
    Image.fromarray(arr, mode="L").save(path)
    return path


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # Click >= 8.2 always keeps stderr apart
        return CliRunner()


def test_writes_captioned_overlays_for_files_and_folders(checkpoint: Path, tmp_path: Path) -> None:
    single = _png(tmp_path / "in" / "single.png")
    _png(tmp_path / "tree" / "p1" / "study1_positive" / "image1.png")
    _png(tmp_path / "tree" / "p2" / "study1_positive" / "image1.png", 50, 40)
    out = tmp_path / "out"
    result = _runner().invoke(app, ["explain", str(checkpoint), str(single), str(tmp_path / "tree"),
                                    "--out", str(out), "--alpha", "0.5"])
    assert result.exit_code == 0, result.stderr
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["p1_study1_positive_image1_heatmap.png", "p2_study1_positive_image1_heatmap.png",
                       "single_heatmap.png"]
    figure = Image.open(out / "p2_study1_positive_image1_heatmap.png")
    # a 40 x 50 image is enlarged to a 512-px long side (410 x 512) so the caption stays legible
    assert figure.mode == "RGB" and figure.width == 410 and figure.height > 512  # image + caption
    assert "P(abnormal)=" in result.stdout


def test_bad_file_is_one_line_error(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = _runner().invoke(app, ["explain", str(checkpoint), str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.png" in lines[0]
    assert "Traceback" not in result.stderr


def test_evaluate_without_annotations_is_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    from tests.conftest import make_mura_fixture

    root = make_mura_fixture(tmp_path / "MURA-v1.1", {"valid": [("XR_WRIST", "patient00001", 1, 1, 1)]})
    result = _runner().invoke(app, ["explain", str(checkpoint), "--evaluate", str(root)])
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "annotations.csv" in result.stderr


def test_evaluate_on_phantoms_writes_json(checkpoint: Path, tmp_path: Path) -> None:
    from fracturescan.data.synth import generate_mura_phantoms

    root = tmp_path / "MURA-v1.1"
    generate_mura_phantoms(root, studies=12, size=48, seed=2)
    target = tmp_path / "pg.json"
    result = _runner().invoke(app, ["explain", str(checkpoint), "--evaluate", str(root), "--json", str(target)])
    assert result.exit_code == 0, result.stderr
    report = json.loads(target.read_text())
    n_boxes = sum(1 for line in (root / "annotations.csv").read_text().splitlines()[1:] if "/valid/" in line)
    assert report["n_annotated_positive"] == n_boxes == len(report["cases"])
    tp = [c for c in report["cases"] if c["true_positive"]]
    assert report["n_true_positive"] == len(tp)
    if tp:  # the score is exactly the hit rate over true positives
        assert report["score"] == pytest.approx(np.mean([c["hit"] for c in tp]))
    assert "Pointing game" in result.stdout
    # tied to the scored weights, so the app can tell a stale result from a current one
    from fracturescan.models.checkpoint import read_metadata

    assert report["model_sha256"] == read_metadata(checkpoint).sha256


def test_build_reference_upgrades_an_old_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from fracturescan.data.synth import generate_mura_phantoms
    from fracturescan.explain.reference import load_reference
    from fracturescan.models.checkpoint import read_metadata

    ckpt = tmp_path / "old"
    shutil.copytree(checkpoint, ckpt)
    assert load_reference(ckpt) is None  # trained without one: heatmaps were Grad-CAM
    root = tmp_path / "MURA-v1.1"
    generate_mura_phantoms(root, studies=12, size=48, seed=4)
    target = tmp_path / "pg.json"
    result = _runner().invoke(app, ["explain", str(ckpt), "--build-reference", str(root),
                                    "--evaluate", str(root), "--json", str(target)])
    assert result.exit_code == 0, result.stderr
    assert "Reference stored" in result.stdout
    reference = load_reference(ckpt)
    n_normal = sum(1 for p in (root / "train").rglob("*.png") if "_negative" in str(p))
    assert reference is not None and reference.n_images == n_normal
    assert reference.abnormal_peak is not None
    assert read_metadata(ckpt).reference_layer == reference.layer
    assert json.loads(target.read_text())["method"] == "reference-ig"  # the heatmaps now use it


def test_unknown_method_is_refused_before_any_work(checkpoint: Path, tmp_path: Path) -> None:
    result = _runner().invoke(app, ["explain", str(checkpoint), "--evaluate", str(tmp_path / "no-such-data"),
                                    "--method", "gradcam"])
    assert result.exit_code == 1
    # the method is named, not the (also missing) data: nothing was opened first
    assert result.stderr.strip().splitlines() == [
        "error: Unknown explanation method 'gradcam'; choose one of auto, grad-cam, reference-ig."]
