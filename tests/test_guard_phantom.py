"""The decision rule on a trained phantom model: the input guard's in/out rates, calibration and
the three levels, all fitted at the end of training on the patient-level hold-out and measured
here on data that played no part in fitting them (the phantom ``valid`` split and generated
non-wrist images)."""

from __future__ import annotations

import numpy as np
import pytest

from fracturescan.data.cache import build_cache
from fracturescan.data.images import resize_square
from fracturescan.data.sources import open_dataset
from fracturescan.decision import DOUBT, decide_study
from fracturescan.evaluation.calibration import expected_calibration_error
from fracturescan.evaluation.metrics import aggregate_studies
from fracturescan.evaluation.temperature import apply_temperature
from fracturescan.inference import Predictor
from tests import guard_samples

#: Images per family of non-wrist inputs.
N_OOD = 40


@pytest.fixture(scope="module")
def scored(phantom_run):
    """The predictor and (logits, guard scores, labels, study ids) of the phantom valid split."""
    predictor = Predictor.from_checkpoint(phantom_run.run, device="cpu", backend="torch")
    records = open_dataset(phantom_run.mura, "XR_WRIST").split("valid")
    cache = build_cache(records, predictor.image_size, None, desc="valid")
    logits, scores = predictor.assess(np.asarray(cache.pixels))
    return predictor, np.asarray(cache.pixels), logits, scores, np.array([r.label for r in cache.records]), \
        [r.study_id for r in cache.records]


def test_training_stored_all_three_pieces(scored) -> None:
    predictor = scored[0]
    rule = predictor.rule
    assert rule.calibration is not None and rule.calibration.fitted_on == "patient-level hold-out"
    assert rule.guard is not None and predictor.guard is not None
    assert rule.guard.kept_on_threshold_data >= 0.95
    assert rule.points is not None, rule.unavailable
    assert rule.points.low <= predictor.threshold <= rule.points.high or rule.points.collapsed


@pytest.mark.parametrize("family", ["photos", "documents", "noise", "inverted", "chest", "other anatomy"])
def test_guard_rejects_what_is_not_a_wrist_radiograph(scored, family: str) -> None:
    predictor, valid_pixels = scored[0], scored[1]
    make = {"photos": guard_samples.natural_photos, "documents": guard_samples.documents,
            "noise": guard_samples.noise, "chest": guard_samples.chest_phantoms,
            "other anatomy": guard_samples.other_anatomy}
    if family == "inverted":
        pixels = 255 - valid_pixels[:N_OOD]
    else:
        pixels = np.stack([resize_square(img, predictor.image_size) for img in make[family](N_OOD, seed=7)])
    _, scores = predictor.assess(pixels)
    rejected = float(np.mean(scores > predictor.rule.guard.threshold))
    assert rejected >= 0.95, f"{family}: only {rejected:.0%} rejected"


def test_guard_keeps_in_distribution_images(scored) -> None:
    predictor, scores = scored[0], scored[3]
    kept = float(np.mean(scores <= predictor.rule.guard.threshold))
    assert kept >= 0.95, f"only {kept:.1%} of {len(scores)} valid images kept"


def test_calibration_and_levels_on_the_test_split(scored) -> None:
    predictor, _, logits, _, labels, studies = scored
    raw, calibrated = apply_temperature(logits), apply_temperature(logits, predictor.rule.temperature)
    # The predictor's own probabilities come from another forward pass (other batch shapes, maybe
    # another thread count), so they agree to float32 rounding only.
    assert np.allclose(predictor.probabilities(scored[1]), calibrated)
    # Same logits on both sides: with T = 1 (scaling not kept) the two ECEs are equal.
    assert expected_calibration_error(labels, calibrated) <= expected_calibration_error(labels, raw) + 1e-12
    table = aggregate_studies(studies, labels, calibrated)
    by_study: dict[str, list[float]] = {}
    for s, z in zip(studies, logits):
        by_study.setdefault(s, []).append(float(z))
    decisions = {s: decide_study(predictor.rule, z) for s, z in by_study.items()}
    truth = dict(zip(table.study_ids, table.y_true))
    # The study probability is the mean of the calibrated image probabilities (MURA's rule).
    assert all(np.isclose(decisions[s].probability, p) for s, p in zip(table.study_ids, table.y_prob))
    single = np.mean([decisions[s].abnormal == bool(truth[s]) for s in decisions])
    outside = [s for s in decisions if decisions[s].level != DOUBT]
    assert outside, "every study fell in the doubt band"
    confident = np.mean([(decisions[s].level == "abnormal") == bool(truth[s]) for s in outside])
    assert confident >= single
