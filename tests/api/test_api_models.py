"""What the API says about a model: the localisation check, and the trained phantom model's
reference heatmaps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fracturescan.models.checkpoint import read_metadata


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_poor_localisation_score_is_reported_and_warned(make_client, api_checkpoint: Path, tmp_path: Path,
                                                          doctor_key: str) -> None:
    run = shutil.copytree(api_checkpoint.parent, tmp_path / "poor")
    sha = read_metadata(run / "best").sha256
    (run / "pointing_valid.json").write_text(json.dumps(
        {"model_sha256": sha, "score": 0.3, "n_true_positive": 40, "split": "valid"}))
    (run / "pointing_train.json").write_text(json.dumps(  # another model's weights: ignored
        {"model_sha256": "0" * 64, "score": 0.99, "n_true_positive": 40, "split": "train"}))
    client = make_client((run,))
    info = client.get("/v1/model", headers=auth(doctor_key)).json()
    assert info["localisation"] == {"score": 0.3, "n_true_positive": 40, "split": "valid", "reliable": False,
                                    "bar": 0.6}
    assert any("did not reliably point" in w and "30%" in w for w in info["warnings"])


@pytest.mark.slow
def test_trained_phantom_model_serves_reference_heatmaps(make_client, phantom_run, doctor_key: str) -> None:
    """The DenseNet121 phantom model (trained once per test session) explains against its
    typical-normal reference, and a phantom with a fracture scores above a normal one on average."""
    from fracturescan.data.mura import load_mura

    client = make_client((phantom_run.run,))
    info = client.get("/v1/model", headers=auth(doctor_key)).json()
    assert info["heatmap_method"] == "reference-ig" and info["synthetic"] is True
    assert info["architecture"] == "densenet121"
    records = load_mura(phantom_run.mura, "valid")
    positives = [r.path for r in records if r.label == 1][:4]
    negatives = [r.path for r in records if r.label == 0][:4]

    def study_p(paths: list[Path], heatmaps: bool = False) -> dict:
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
        response = client.post(f"/v1/predict?heatmaps={str(heatmaps).lower()}", headers=auth(doctor_key),
                               files=files)
        assert response.status_code == 200, response.text
        return response.json()

    with_heatmaps = study_p(positives[:1], heatmaps=True)
    assert with_heatmaps["images"][0]["heatmap_method"] == "reference-ig"
    assert "typical normal" in with_heatmaps["heatmap_caption"]
    assert study_p(positives)["study"]["probability"] > study_p(negatives)["study"]["probability"]
