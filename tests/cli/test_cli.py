"""The command line: real commands through Typer's runner, errors as one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fracturescan.cli.main import app, main
from fracturescan.inference import Predictor
from fracturescan.models import build_model, save_checkpoint
from fracturescan.notices import SYNTHETIC_MODEL

from ..conftest import write_png
from ..tolerances import assert_within, predictor_probability_bound, sum_bound

runner = CliRunner()


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18", weights="none", hidden=16)
    out = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(out, model, {"input_size": 64, "synthetic": True, "threshold": 0.5})
    return out


def test_predict_study_folder_with_a_broken_file(small_checkpoint: Path, tmp_path: Path) -> None:
    study = tmp_path / "patient1" / "study1_negative"
    for i in range(3):
        write_png(study / f"image{i}.png", value=40 * i, size=(50 + i, 60))
    (study / "image9.png").write_bytes(b"<html>not an image</html>")
    single = write_png(tmp_path / "single.png", value=90)
    result = runner.invoke(app, ["predict", str(small_checkpoint), str(tmp_path / "patient1"), str(single),
                                 "--csv", str(tmp_path / "out.csv"), "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    assert SYNTHETIC_MODEL in result.output and "not a diagnosis" in result.output
    doc = json.loads((tmp_path / "out.json").read_text())
    images = {Path(i["path"]).name: i for i in doc["images"]}
    assert images["image9.png"]["probability"] is None and "image9.png" in images["image9.png"]["error"]
    # study probability = mean of its readable images, checked against the Predictor directly
    predictor = Predictor.from_checkpoint(small_checkpoint, device="cpu")
    paths = [study / f"image{i}.png" for i in range(3)] + [single]
    # The CLI predicts in batches, the Predictor one image at a time: other kernels, other rounding.
    bound = predictor_probability_bound(predictor, paths)
    probs = [predictor.predict_image(p) for p in paths]
    assert_within([images[p.name]["probability"] for p in paths], probs, bound, "CLI vs Predictor")
    studies = {s["study_id"]: s for s in doc["studies"]}
    own = [images[f"image{i}.png"]["probability"] for i in range(3)]
    # The study is the mean of its images (a 3-term float sum and a division, on either side).
    assert_within(studies[str(study)]["probability"], np.mean(own), sum_bound(sum(own) / 3, n=3, extra_ops=1))
    assert studies[str(study)]["n_images"] == 3
    assert studies[str(single)]["probability"] == images["single.png"]["probability"]
    for s in doc["studies"]:
        assert s["abnormal"] == (s["probability"] >= doc["threshold"])
    with (tmp_path / "out.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    image_rows = [r for r in rows if r["level"] == "image"]
    assert len(image_rows) == 5 and sum(r["decision"] == "unreadable" for r in image_rows) == 1
    assert {r["study"]: int(r["n_images"]) for r in rows if r["level"] == "study"} == {str(study): 3, str(single): 1}


def test_user_errors_are_one_line(small_checkpoint: Path, tmp_path: Path, capsys) -> None:
    cases = [
        ["predict", str(small_checkpoint), str(tmp_path / "missing.png")],
        ["predict", str(tmp_path), str(tmp_path)],
        ["data-info", str(tmp_path / "nowhere")],
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--weights", "none"],
        ["train", "--data", str(tmp_path), "--lr", "-1"],
    ]
    for args in cases:
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 1, args
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err


def test_imagenet_weights_offline_error_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # --offline alone must stop the download; were it ignored, the mirror is a closed local port.
    monkeypatch.delenv("FRACTURESCAN_OFFLINE", raising=False)
    monkeypatch.setenv("FRACTURESCAN_IMAGENET_BASE_URL", "http://127.0.0.1:9")
    from fracturescan.data.synth import generate_mura_phantoms

    generate_mura_phantoms(tmp_path / "data", studies=12, size=48, seed=3)
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--weights", "imagenet", "--image-size", "32", "--epochs", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--offline"])
    err = capsys.readouterr().err
    assert code == 1
    assert "densenet121-a639ec97.pth" in err and str(tmp_path / "torch_home") in err
    assert "downloads are off" in err


def test_synth_and_data_info(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "d"), "--studies", "10", "--size", "48", "--seed", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data-info", str(tmp_path / "d")])
    assert result.exit_code == 0 and "SYNTHETIC" in result.output
    n_images = sum(1 for _ in (tmp_path / "d").rglob("image*.png"))
    totals = [int(line.split(",")[1].split()[0]) for line in result.output.splitlines() if " studies, " in line]
    assert sum(totals) == n_images


def test_synth_body_parts_and_a_part_without_phantoms(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "f"), "--studies", "8", "--size", "32",
                 "--body-part", "wrist,finger"]) == 0
    assert {p.name for p in (tmp_path / "f" / "train").iterdir()} == {"XR_WRIST", "XR_FINGER"}
    capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "e"), "--body-part", "XR_ELBOW"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: No phantom anatomy for XR_ELBOW: phantoms exist for XR_WRIST, XR_FINGER."
    assert not (tmp_path / "e").exists()
