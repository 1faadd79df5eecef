"""End to end on phantoms: a real DenseNet121 learns the fracture, and not from shuffled labels.

Uses the session fixtures in tests/conftest.py (trained once per session, a few minutes on CPU).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from fracturescan.data.mura import load_mura
from fracturescan.evaluation.metrics import aggregate_studies
from fracturescan.evaluation.run import evaluate_run
from fracturescan.evaluation.threshold import choose_threshold
from fracturescan.inference import Predictor
from fracturescan.models import read_metadata

from ..tolerances import assert_within, predictor_probability_bound

pytestmark = pytest.mark.slow


def _study_auc_from_predictions(report_dir) -> float:
    """Recompute study AUC independently from predictions.csv with scikit-learn."""
    with (report_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    studies: dict[str, list] = {}
    for row in rows:
        studies.setdefault(row["study_id"], [int(row["label"]), []])[1].append(float(row["prob"]))
    labels = [v[0] for v in studies.values()]
    probs = [float(np.mean(v[1])) for v in studies.values()]
    return roc_auc_score(labels, probs)


@pytest.fixture(scope="module")
def valid_evaluation(phantom_run, tmp_path_factory):
    """The true-label model evaluated on the valid split once for the tests that read it."""
    return evaluate_run(phantom_run.run, split="valid", out=tmp_path_factory.mktemp("eval"), n_boot=200)


def test_phantom_model_reaches_study_auc_095(valid_evaluation) -> None:
    metrics, report = valid_evaluation
    auc = metrics["study_level"]["metrics"]["auc"]
    assert auc >= 0.95, f"study-level AUC on phantom valid = {auc:.3f}"
    assert auc == pytest.approx(_study_auc_from_predictions(report), abs=1e-9)
    # the report says loudly that this is synthetic
    assert metrics["synthetic"] is True
    assert "SYNTHETIC" in (report / "report.html").read_text().upper()


def test_shuffled_labels_give_chance_auc(shuffled_run, tmp_path) -> None:
    # Evaluate on the phantom valid split with TRUE labels.
    metrics, report = evaluate_run(shuffled_run.run, split="valid", data=shuffled_run.data,
                                   out=tmp_path / "eval", n_boot=200)
    auc = metrics["study_level"]["metrics"]["auc"]
    assert 0.3 <= auc <= 0.7, f"shuffled-label model should be at chance, got study AUC {auc:.3f}"


def test_run_directory_is_complete(phantom_run) -> None:
    run = phantom_run.run
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["arch"] == "densenet121" and cfg["image_size"] == 64 and cfg["batch_size"] == 32
    with (run / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in history] == list(range(1, len(history) + 1))
    assert {"train_loss", "val_loss", "val_auc", "val_study_auc", "lr"} <= set(history[0])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    meta = read_metadata(run / "best")
    assert meta.synthetic is True
    assert meta.input_size == 64 and meta.arch == "densenet121"
    assert "hold-out" in meta.threshold_method
    # the typical-normal reference for heatmaps was written and is verified on load
    from fracturescan.explain.reference import load_reference

    reference = load_reference(run / "best")
    assert reference is not None and reference.layer == meta.reference_layer == "features.denseblock2"
    assert reference.input_size == 64 and reference.activation.shape[1:] == (8, 8)
    assert reference.abnormal_peak is not None and reference.abnormal_peak > 0  # colour scale measured
    card = (run / "best" / "MODEL_CARD.md").read_text()
    assert "synthetic" in card.lower()


def test_threshold_was_chosen_on_the_holdout_not_valid(phantom_run) -> None:
    """Recompute the hold-out threshold independently: predict the hold-out patients' images
    with the Predictor (file → read → resize → model) and run choose_threshold on them."""
    run = phantom_run.run
    split = json.loads((run / "split.json").read_text())
    holdout = set(split["holdout_patients"])
    records = [r for r in load_mura(phantom_run.mura, "train") if r.patient_id in holdout]
    assert len(records) == split["holdout_images"]
    predictor = Predictor.from_checkpoint(run, device="cpu")
    images, _ = predictor.predict_paths([r.path for r in records], progress=False)
    probs = np.array([i.probability for i in images])
    labels = np.array([r.label for r in records])
    expected = choose_threshold(labels, probs, "f1").value
    assert predictor.threshold == pytest.approx(expected, abs=1e-6)
    # and no valid-split patient is in the hold-out
    valid_patients = {r.patient_id for r in load_mura(phantom_run.mura, "valid")}
    assert not holdout & valid_patients


def test_predictor_matches_evaluation_path(phantom_run, valid_evaluation) -> None:
    """CLI/app preprocessing (decode each file) and the training cache give the same inputs."""
    _, report = valid_evaluation
    with (report / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:24]
    predictor = Predictor.from_checkpoint(phantom_run.run, device="cpu")
    # Evaluation predicts cached pixels in batches, the Predictor one file at a time.
    bound = predictor_probability_bound(predictor, [row["path"] for row in rows])
    assert_within([predictor.predict_image(row["path"]) for row in rows], [float(row["prob"]) for row in rows],
                  bound, "Predictor vs evaluation")
    study = aggregate_studies([r["study_id"] for r in rows], [int(r["label"]) for r in rows],
                              [float(r["prob"]) for r in rows])
    assert len(study.study_ids) >= 5
