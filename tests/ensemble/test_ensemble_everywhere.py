"""An ensemble checkpoint loads wherever a single checkpoint does: the Predictor (with and
without TTA), explain, the ONNX export and the model discovery behind the app and the API.
Every number is checked against the members run on their own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fracturescan.inference import Predictor
from fracturescan.tta import apply_view, views_for

from .conftest import random_checkpoint


def predictor(path: Path, **options) -> Predictor:
    return Predictor.from_checkpoint(path, device="cpu", **{"backend": "torch", **options})


def pixels(n: int = 5, size: int = 64, seed: int = 0) -> np.ndarray:
    """Radiograph-like uint8 inputs: a bright off-centre blob on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx * 0.8) ** 2) / 0.02)
        out.append(np.clip(20 + 200 * blob + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8))
    return np.stack(out)


def test_predictor_gives_the_mean_of_its_members(member_runs, ensemble_dir: Path) -> None:
    x = pixels()
    members = [predictor(run).probabilities(x) for run in member_runs]
    ens = predictor(ensemble_dir)
    assert ens.metadata.arch == "ensemble" and ens.threshold == pytest.approx(0.5)
    np.testing.assert_allclose(ens.probabilities(x), np.mean(members, axis=0), atol=1e-6)


def test_tta_on_an_ensemble_is_the_mean_over_views_and_members(member_runs, ensemble_dir: Path) -> None:
    x = pixels(3)
    views = views_for(predictor(ensemble_dir).metadata.training_config)
    assert [v.name for v in views] == ["identity", "flip", "rotate+2", "rotate-2"]  # members: ±10° and ±4°
    by_hand = np.mean([[predictor(run).probabilities(apply_view(x, v)) for run in member_runs] for v in views],
                      axis=(0, 1))
    np.testing.assert_allclose(predictor(ensemble_dir, tta=True).probabilities(x), by_hand, atol=1e-6)


def test_study_prediction_from_files(member_runs, ensemble_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    study = tmp_path / "study1"
    study.mkdir()
    for i, image in enumerate(pixels(2, size=90, seed=3)):
        Image.fromarray(image).save(study / f"image{i}.png")
    (study / "notes.png").write_bytes(b"not a png")  # reported, not fatal, as for any model
    images, studies = predictor(ensemble_dir).predict_paths([study], progress=False)
    member_images = [predictor(run).predict_paths([study], progress=False)[0] for run in member_runs]
    readable = [i for i in images if i.probability is not None]
    assert len(readable) == 2 and any(i.error for i in images)
    for i, item in enumerate(images):
        if item.probability is not None:
            assert item.probability == pytest.approx(np.mean([m[i].probability for m in member_images]), abs=1e-6)
    assert studies[0].probability == pytest.approx(np.mean([i.probability for i in readable]))


def test_explain_averages_the_member_heatmaps(member_runs, ensemble_dir: Path) -> None:
    from fracturescan.explain import explain_image

    image = pixels(1, size=80, seed=5)[0].astype(np.float32) / 255.0
    ens = explain_image(predictor(ensemble_dir), image)
    singles = [explain_image(predictor(run), image) for run in member_runs]
    assert ens.method == "grad-cam"  # the random members have no typical-normal reference
    np.testing.assert_allclose(ens.heatmap, np.mean([s.heatmap for s in singles], axis=0), atol=1e-5)
    assert ens.heatmap.shape == image.shape and "mean of members" in ens.layer
    assert ens.probability == pytest.approx(np.mean([s.probability for s in singles]), abs=1e-6)
    assert ens.probability == pytest.approx(predictor(ensemble_dir).predict_image(_png(image)), abs=1e-5)


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_onnx_export_is_one_graph_of_all_members(ensemble_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from fracturescan.export import export_onnx

    copy = shutil.copytree(ensemble_dir, tmp_path / "ens")
    result = export_onnx(copy)
    assert result.max_abs_diff <= 1e-4
    fast = Predictor.from_checkpoint(copy, device="cpu")
    assert fast.backend == "onnx"
    x = pixels(4)
    np.testing.assert_allclose(fast.probabilities(x), predictor(copy).probabilities(x), atol=1e-5)
    # The export changed the metadata, not the ensemble's identity or its member list.
    assert fast.metadata.sha256 == predictor(ensemble_dir).metadata.sha256


def test_model_discovery_lists_ensembles_beside_runs(member_runs, ensemble_dir: Path, tmp_path: Path) -> None:
    from fracturescan.service import discover_models

    models = tmp_path / "models"
    for run in member_runs:
        shutil.copytree(run, models / run.name)
    shutil.copytree(ensemble_dir, models / "ens")
    found = {m.model_id: m for m in discover_models(models)}
    assert set(found) == {"a", "b", "ens"}
    assert found["ens"].metadata.arch == "ensemble" and "ensemble of 2 models" in found["ens"].model_card()
    assert found["ens"].problem is None  # every member's weights verified
    weights = models / "ens" / "members" / "1-b" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    problem = {m.model_id: m for m in discover_models(models)}["ens"].problem
    assert problem is not None and "1-b" in problem and "does not match the SHA-256" in problem


def test_a_mixed_architecture_ensemble_works(member_runs, tmp_path: Path) -> None:
    """Members need the same input, not the same network: a DenseNet and a ResNet."""
    from fracturescan.ensemble import build_ensemble

    dense = random_checkpoint(tmp_path / "dense" / "best", 3, arch="densenet121", rotation=10.0)
    ens = build_ensemble([member_runs[0], dense.parent], tmp_path / "mixed")
    x = pixels(2)
    expected = np.mean([predictor(member_runs[0]).probabilities(x), predictor(dense).probabilities(x)], axis=0)
    np.testing.assert_allclose(predictor(ens).probabilities(x), expected, atol=1e-6)


def test_cli_predict_with_tta_and_explain_an_ensemble(ensemble_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from PIL import Image

    from fracturescan.cli.main import main

    image = tmp_path / "view.png"
    Image.fromarray(pixels(1, size=72, seed=9)[0]).save(image)
    assert main(["predict", str(ensemble_dir), str(image), "--tta", "--backend", "torch", "--device", "cpu",
                 "--json", str(tmp_path / "p.json")]) == 0
    assert "mean probability over 4 views" in capsys.readouterr().out
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["test_time_augmentation"] == ["identity", "flip", "rotate+2", "rotate-2"]
    expected = predictor(ensemble_dir, tta=True).predict_image(image)
    assert doc["images"][0]["probability"] == pytest.approx(expected, abs=1e-6)
    assert main(["explain", str(ensemble_dir), str(image), "--out", str(tmp_path / "maps"), "--device", "cpu"]) == 0
    assert (tmp_path / "maps" / "view_heatmap.png").is_file()
