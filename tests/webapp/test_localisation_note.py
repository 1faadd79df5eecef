"""The Doctor page says whether the active model's heatmaps were checked against known fracture
boxes (the pointing game), warns when they failed, and ignores results for other weights."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .conftest import DOCTOR_PASSWORD, make_checkpoint
from .test_app import login, new_app, texts

from fracturescan.models.checkpoint import read_metadata  # noqa: E402
from fracturescan.appconfig import ENV_MODELS_DIR  # noqa: E402
from fracturescan.service import LOCALISATION_BAR, discover_models  # noqa: E402


def _write(folder: Path, sha: str | None, score: float | None, n_tp: int = 40, split: str = "valid") -> Path:
    file = folder / f"pointing_{split}.json"
    file.write_text(json.dumps({"split": split, "score": score, "n_true_positive": n_tp, "model_sha256": sha}))
    return file


@pytest.fixture(scope="module")
def one_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loc_models")
    make_checkpoint(root / "phantom_run" / "best", synthetic=True)
    return root


def _choice(root: Path):
    (choice,) = discover_models(root)
    return choice


def test_result_is_found_beside_the_checkpoint_or_in_its_run(one_model: Path) -> None:
    run, best = one_model / "phantom_run", one_model / "phantom_run" / "best"
    sha = read_metadata(best).sha256
    for stale in run.glob("pointing_*.json"):
        stale.unlink()
    assert _choice(one_model).localisation() is None
    _write(run, sha, 0.75)
    check = _choice(one_model).localisation()
    assert (check.score, check.n_true_positive, check.split, check.reliable) == (0.75, 40, "valid", True)
    # another file for these weights, written later, wins; one for other weights never counts
    newer = _write(best, sha, 0.30, split="train")
    os.utime(newer, (time.time() + 5, time.time() + 5))
    assert _choice(one_model).localisation().score == pytest.approx(0.30)
    _write(best, "0" * 64, 0.99, split="train")
    assert _choice(one_model).localisation().score == pytest.approx(0.75)
    (best / "pointing_broken.json").write_text("{not json")
    assert _choice(one_model).localisation().score == pytest.approx(0.75)
    assert _choice(one_model).localisation().reliable is (0.75 >= LOCALISATION_BAR)


@pytest.mark.parametrize("score, warned", [(0.25, True), (0.8, False), (None, None)])
def test_doctor_page_shows_the_check(engine, monkeypatch, tmp_path: Path, score, warned) -> None:
    root = tmp_path / "models"
    best = make_checkpoint(root / "phantom_run" / "best", synthetic=True)
    if warned is not None:
        _write(root / "phantom_run", read_metadata(best).sha256, score, n_tp=57)
    monkeypatch.setenv(ENV_MODELS_DIR, str(root))
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    assert not at.exception
    warnings = [w.value for w in at.warning if "did not reliably point" in w.value]
    shown = texts(at)
    if warned is None:
        assert not warnings and "not measured for this model version" in shown
    elif warned:
        assert len(warnings) == 1 and "25%" in warnings[0] and "57" in warnings[0]
    else:
        assert not warnings and "80% of 57 detected fractures" in shown
