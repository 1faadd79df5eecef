"""`fracturescan calibrate RUN DATA`: an older checkpoint gains calibration, operating points and an
input guard from a site's labelled studies (recording which), and bad calibration data stop with
one line and leave the checkpoint as it was."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fracturescan.cli.main import app
from fracturescan.evaluation.temperature import apply_temperature
from fracturescan.guard import GUARD_FILE
from fracturescan.inference import Predictor
from fracturescan.models import build_model, save_checkpoint

from ..guard_samples import labelled_site

runner = CliRunner()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(2)
    out = tmp_path / "run" / "best"
    save_checkpoint(out, build_model("resnet18", weights="none", hidden=16),
                    {"input_size": 32, "synthetic": True, "threshold": 0.5, "body_parts": ["XR_WRIST"]})
    return out


def test_an_old_checkpoint_gains_all_three(checkpoint: Path, tmp_path: Path) -> None:
    before = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert before.rule.missing == ("calibration", "operating points", "input guard")
    data = labelled_site(tmp_path / "site", [0, 1] * 15)
    result = runner.invoke(app, ["calibrate", str(checkpoint.parent), str(data)])
    assert result.exit_code == 0, result.output
    meta = json.loads((checkpoint / "metadata.json").read_text())
    assert str(data) in meta["calibration"]["fitted_on"] and "split train" in meta["calibration"]["fitted_on"]
    assert meta["calibration"]["n_images"] == 60 and meta["calibration"]["n_studies"] == 30
    assert meta["calibration"]["data_fingerprint"] and meta["decision_points"]["n_abnormal"] == 15
    assert (checkpoint / GUARD_FILE).is_file() and meta["guard"]["sha256"]
    after = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert after.rule.missing == ()
    pixels = np.stack([after.preprocess(np.full((40, 36), v, np.float32)) for v in (0.2, 0.7)])
    assert np.allclose(after.probabilities(pixels), apply_temperature(after.logits(pixels), after.rule.temperature))
    assert after.rule.points.low <= after.threshold <= after.rule.points.high
    shown = runner.invoke(app, ["predict", str(checkpoint), str(tmp_path / "site" / "s0")])
    assert shown.exit_code == 0 and "category" in shown.output and "no calibration" not in shown.output
    # A study holding a site view and a noise image: the noise is flagged and left out unless insisted on.
    study = tmp_path / "mixed" / "study1"
    study.mkdir(parents=True)
    (study / "view.png").write_bytes((tmp_path / "site" / "s0" / "v0.png").read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, (60, 50), dtype=np.uint8)
    Image.fromarray(noise, mode="L").save(study / "noise.png")
    counted = {}
    for flag in ([], ["--include-flagged"]):
        out = runner.invoke(app, ["predict", str(checkpoint), str(study), "--study-per-folder",
                                  "--csv", str(tmp_path / "p.csv"), *flag])
        assert out.exit_code == 0, out.output
        rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
        noise_row = next(r for r in rows if r["path"].endswith("noise.png"))
        assert "not like the training data" in noise_row["flags"]
        counted[bool(flag)] = next(int(r["n_images"]) for r in rows if r["level"] == "study")
    assert counted == {False: 1, True: 2}


@pytest.mark.parametrize("labels, message", [
    ([1] * 12, "cannot calibrate on one class only: every label is abnormal"),
    ([0] * 20 + [1] * 3, "too few studies for the sensitivity 0.95 operating point: 3 abnormal studies"),
])
def test_bad_calibration_data_stop_with_one_line(checkpoint: Path, tmp_path: Path, labels, message) -> None:
    data = labelled_site(tmp_path / "site", labels)
    before = (checkpoint / "metadata.json").read_bytes()
    result = runner.invoke(app, ["calibrate", str(checkpoint), str(data)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert (checkpoint / "metadata.json").read_bytes() == before and not (checkpoint / GUARD_FILE).exists()


def test_labels_that_do_not_match_the_images_stop_with_one_line(checkpoint: Path, tmp_path: Path) -> None:
    data = labelled_site(tmp_path / "site", [0, 1] * 10)
    text = data.read_text().splitlines()
    # The second view of study s1 (abnormal) labelled normal: the study contradicts itself.
    data.write_text("\n".join(text[:4] + [text[4].replace(",1,s1,", ",0,s1,")] + text[5:]) + "\n")
    before = (checkpoint / "metadata.json").read_bytes()
    result = runner.invoke(app, ["calibrate", str(checkpoint), str(data)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "different labels" in lines[0], result.output
    assert (checkpoint / "metadata.json").read_bytes() == before
