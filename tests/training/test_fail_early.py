"""A run that cannot get its initial weights stops before the slow image cache is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from fracturescan.config import TrainConfig
from fracturescan.errors import WeightsNotFoundError
from fracturescan.training.loop import train
from tests.conftest import write_png


def test_missing_imagenet_weights_fail_before_any_image_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTURESCAN_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    rows = ["path,label,study_id,patient_id,split"]
    for i in range(6):
        rows.append(f"{write_png(tmp_path / 'img' / f'{i}.png', value=50 + 30 * i)},{i % 2},s{i},p{i},train")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    cfg = TrainConfig(data=str(tmp_path / "data.csv"), out=str(tmp_path / "run"), weights="imagenet", image_size=32,
                      epochs=1, device="cpu", cache_dir=str(cache), body_part="all", holdout_fraction=0.34)
    with pytest.raises(WeightsNotFoundError, match="not in the local torch hub cache"):
        train(cfg)
    assert not cache.exists() or not any(cache.iterdir())  # nothing was decoded
