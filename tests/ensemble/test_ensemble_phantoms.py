"""End to end on trained phantom models: an ensemble of two runs is evaluated like a run, its
study probabilities are the mean of its members', and ``compare`` gives its paired difference
from each member (checked against scikit-learn on the written predictions)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def study_probabilities(eval_dir: Path) -> tuple[dict[str, float], dict[str, int]]:
    with (eval_dir / "study_predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {r["study_id"]: float(r["prob"]) for r in rows}, {r["study_id"]: int(r["label"]) for r in rows}


def test_ensemble_of_two_phantom_runs_evaluates_explains_and_compares(
        phantom_run, phantom_resnet_run, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from fracturescan.data.images import read_image
    from fracturescan.data.mura import load_mura
    from fracturescan.ensemble import build_ensemble
    from fracturescan.evaluation.compare import compare_runs, comparison_markdown, load_evaluation
    from fracturescan.evaluation.run import evaluate_run
    from fracturescan.explain import explain_image
    from fracturescan.inference import Predictor

    ens = build_ensemble([phantom_run.run, phantom_resnet_run.run], tmp_path / "ens")
    # No config.yaml in an ensemble: evaluate finds the members' data set in its metadata.
    evaluated = {}
    for name, run in (("ens", ens), ("dense", phantom_run.run), ("resnet", phantom_resnet_run.run)):
        evaluate_run(run, split="valid", out=tmp_path / name / "eval_valid", n_boot=50, device="cpu")
        evaluated[name] = study_probabilities(tmp_path / name / "eval_valid")
    (p_ens, labels), (p_dense, _), (p_res, _) = evaluated["ens"], evaluated["dense"], evaluated["resnet"]
    assert set(p_ens) == set(p_dense) == set(p_res) and len(p_ens) == 64
    # Study probability = mean of image probabilities, image probability = mean of members': so the
    # ensemble's study probability is the mean of the members' study probabilities.
    for study in p_ens:
        assert p_ens[study] == pytest.approx((p_dense[study] + p_res[study]) / 2, abs=1e-5)

    runs = [load_evaluation(tmp_path / name, "valid") for name in ("ens", "dense", "resnet")]
    result = compare_runs(runs, n_boot=300)
    studies = sorted(p_ens)
    y = np.array([labels[s] for s in studies])
    auc = {name: roc_auc_score(y, [evaluated[name][0][s] for s in studies]) for name in evaluated}
    assert [m["name"] for m in result["models"]] == ["ens", "dense", "resnet"]
    assert [d["name"] for d in result["differences"]] == ["dense", "resnet"]
    for diff in result["differences"]:  # each member minus the ensemble, on the same resamples
        assert diff["reference"] == "ens"
        d = diff["metrics"]["auc"]
        assert d["difference"] == pytest.approx(auc[diff["name"]] - auc["ens"], abs=1e-9)
        assert d["ci95"][0] <= d["ci95"][1]
    assert "ens minus" not in comparison_markdown(result) and "dense minus ens" in comparison_markdown(result)

    # Explanations: both members carry a typical-normal reference, so the ensemble's heatmap is
    # the mean of their integrated-gradients maps.
    positive = next(r.path for r in load_mura(phantom_run.mura, "valid") if r.label == 1)
    image = read_image(positive)
    predictors = [Predictor.from_checkpoint(p, device="cpu", backend="torch") for p in (ens, phantom_run.run,
                                                                                       phantom_resnet_run.run)]
    maps = [explain_image(p, image) for p in predictors]
    assert [m.method for m in maps] == ["reference-ig"] * 3
    np.testing.assert_allclose(maps[0].heatmap, (maps[1].heatmap + maps[2].heatmap) / 2, atol=1e-5)
