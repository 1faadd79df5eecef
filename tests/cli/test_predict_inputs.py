"""`fracturescan predict`: loose images stay separate studies, the grouping is printed, CSV lists
are read, and the CSV holds study rows beside image rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fracturescan.cli.main import app
from fracturescan.inference import Predictor
from fracturescan.models import build_model, save_checkpoint

from ..conftest import write_png

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(out, build_model("resnet18", weights="none", hidden=16),
                    {"input_size": 64, "synthetic": True, "threshold": 0.5})
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_of_unrelated_images_is_not_one_study(checkpoint: Path, tmp_path: Path) -> None:
    paths = [write_png(tmp_path / "loose" / f"p{i}.png", value=30 + 60 * i, size=(40 + 7 * i, 50)) for i in range(3)]
    result = runner.invoke(app, ["predict", str(checkpoint), str(tmp_path / "loose"), "--csv", str(tmp_path / "o.csv")])
    assert result.exit_code == 0, result.output
    assert "Grouping: 3 images in 3 studies (3 single image)" in result.output
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    expected = {str(p): predictor.predict_image(p) for p in paths}
    studies = [r for r in _rows(tmp_path / "o.csv") if r["level"] == "study"]
    assert {r["study"]: float(r["probability"]) for r in studies} == pytest.approx(expected, abs=1e-6)
    assert all(r["n_images"] == "1" and r["grouped_by"] == "single image" for r in studies)
    # --study-per-folder: the folder is one study, its probability the mean of the three.
    result = runner.invoke(app, ["predict", str(checkpoint), str(tmp_path / "loose"), "--study-per-folder",
                                 "--csv", str(tmp_path / "f.csv")])
    assert result.exit_code == 0 and "3 images in 1 studies (1 shared folder)" in result.output
    (study,) = [r for r in _rows(tmp_path / "f.csv") if r["level"] == "study"]
    assert study["n_images"] == "3" and float(study["probability"]) == pytest.approx(np.mean(list(expected.values())),
                                                                                     abs=1e-6)


def test_predict_reads_a_csv_list(checkpoint: Path, tmp_path: Path) -> None:
    a = write_png(tmp_path / "a.png", value=50)
    b = write_png(tmp_path / "b.png", value=200)
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,study_id\n{a},visit1\nb.png,visit1\nmissing.png,visit2\n")
    result = runner.invoke(app, ["predict", str(checkpoint), str(listing), "--csv", str(tmp_path / "o.csv"),
                                 "--json", str(tmp_path / "o.json")])
    assert result.exit_code == 0, result.output
    assert "3 images in 2 studies (2 by study_id column of the CSV list)" in result.output
    rows = _rows(tmp_path / "o.csv")
    assert [r["level"] for r in rows] == ["image"] * 3 + ["study"] * 2
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    visit1 = next(r for r in rows if r["level"] == "study" and r["study"] == "visit1")
    assert float(visit1["probability"]) == pytest.approx(
        np.mean([predictor.predict_image(a), predictor.predict_image(b)]), abs=1e-6)
    visit2 = next(r for r in rows if r["level"] == "study" and r["study"] == "visit2")
    assert visit2["decision"] == "unreadable" and visit2["n_images"] == "0"
