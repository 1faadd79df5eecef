"""The REST API serves an ensemble checkpoint like any other model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import png_bytes
from tests.ensemble.conftest import random_checkpoint


def test_api_predicts_and_explains_with_an_ensemble(make_client, doctor_key: str, tmp_path: Path) -> None:
    from fracturescan.ensemble import build_ensemble
    from fracturescan.inference import Predictor

    runs = [random_checkpoint(tmp_path / name / "best", seed).parent for name, seed in (("a", 1), ("b", 2))]
    ens = build_ensemble(runs, tmp_path / "models" / "ens")
    client = make_client((ens,))
    headers = {"Authorization": f"Bearer {doctor_key}"}
    info = client.get("/v1/model", headers=headers).json()
    assert info["architecture"] == "ensemble" and info["synthetic"] is True
    files = [("files", (f"view{s}.png", png_bytes(s), "image/png")) for s in (1, 2)]
    response = client.post("/v1/predict?heatmaps=true", headers=headers, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    members = [Predictor.from_checkpoint(run, device="cpu") for run in runs]
    expected = [np.mean([m.predict_image(png_bytes(s), name=f"view{s}.png") for m in members]) for s in (1, 2)]
    np.testing.assert_allclose([i["probability"] for i in body["images"]], expected, rtol=1e-5, atol=1e-6)
    assert body["study"]["probability"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert all(i["heatmap_png"] for i in body["images"])
