"""Input guard building blocks on features with a known distribution (the phantom measurement is
in test_guard_phantom.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fracturescan.errors import CheckpointError, DatasetError
from fracturescan.guard import (GUARD_FILE, GuardInfo, GuardModel, conformal_threshold, fit_gaussians, guard_layers,
                                guard_scores, load_guard, pooled_features, save_guard)
from fracturescan.models import build_model
from fracturescan.models.preprocessing import Preprocessing


def _features(n: int, shift: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 8)) @ np.diag(np.linspace(0.5, 3, 8))
    return {"a": base + shift, "b": np.c_[base[:, :3] * 2, rng.normal(size=(n, 2))] + shift}


def test_in_distribution_kept_and_shifted_features_flagged() -> None:
    labels = np.arange(600) % 2
    fitted = fit_gaussians(_features(600, 0.0, 0), labels)
    threshold = conformal_threshold(guard_scores(fitted, _features(200, 0.0, 1)), 0.95)
    fresh = guard_scores(fitted, _features(4000, 0.0, 2))
    assert np.mean(fresh <= threshold) >= 0.93  # the conformal guarantee is 0.95 in expectation
    assert np.mean(guard_scores(fitted, _features(500, 4.0, 3)) > threshold) >= 0.99


def test_scores_equal_an_independent_mahalanobis_computation() -> None:
    feats = _features(300, 0.0, 4)
    labels = (np.arange(300) % 3 == 0).astype(int)
    fitted = fit_gaussians(feats, labels)
    x = _features(5, 1.0, 5)
    expected = []
    for name in ("a", "b"):
        mus = fitted.means[name].double().numpy()
        cov = np.linalg.inv(fitted.precisions[name].double().numpy())
        d = [min(float((v - m) @ np.linalg.solve(cov, v - m)) for m in mus) for v in x[name]]
        expected.append(np.array(d) / fitted.scales[name])
    assert np.allclose(guard_scores(fitted, x), np.max(expected, axis=0), rtol=1e-4)


def test_conformal_threshold_rank_and_too_few_images() -> None:
    scores = np.arange(1.0, 41.0)  # 40 scores: rank ceil(41 * 0.95) = 39
    assert conformal_threshold(scores[::-1], 0.95) == 39.0
    with pytest.raises(DatasetError, match="at least 19 needed"):
        conformal_threshold(np.arange(18.0), 0.95)


def test_layers_and_pooled_features_of_a_small_model() -> None:
    model = build_model("resnet18", hidden=8).eval()
    layers = guard_layers(model)
    assert layers == ("features",)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    contract = Preprocessing(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    logits, feats = pooled_features(model, pixels, layers, preprocessing=contract)
    x = (torch.from_numpy(pixels).float() / 255).unsqueeze(1).expand(-1, 3, -1, -1)
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        direct = model.features(x).mean(dim=(2, 3)).double().numpy()
        assert np.allclose(logits, model(x).double().numpy(), atol=1e-5)
    assert np.allclose(feats["features"], direct, atol=1e-5)


def test_saved_guard_round_trips_and_refuses_tampering(tmp_path) -> None:
    fitted = fit_gaussians(_features(100, 0.0, 6), np.arange(100) % 2)
    guard = GuardModel(fitted.layers, fitted.means, fitted.precisions, fitted.scales, 3.5)
    info = save_guard(tmp_path, guard, GuardInfo("", (), 3.5, 0.95, 0.96, 100, 40, "test", 64))
    loaded = load_guard(tmp_path, info)
    assert loaded.layers == ("a", "b") and loaded.threshold == 3.5 and loaded.scales == fitted.scales
    x = _features(7, 0.5, 7)
    assert np.allclose(guard_scores(loaded, x), guard_scores(fitted, x))
    assert GuardInfo.from_dict(info.to_dict()) == info and not math.isnan(info.threshold)
    (tmp_path / GUARD_FILE).write_bytes((tmp_path / GUARD_FILE).read_bytes()[:-1] + b"x")
    with pytest.raises(CheckpointError, match="does not match"):
        load_guard(tmp_path, info)
