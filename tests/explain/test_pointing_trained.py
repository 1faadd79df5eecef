"""The pointing game on REAL trained phantom models (session fixtures from tests/conftest.py).

A model trained on the true labels must point at the known fracture box; the same network
trained on shuffled labels must not. Both are scored on the same annotated positive images
(``score_all_positives``), a paired comparison that does not depend on how many true
positives the shuffled model happens to have (a model that learned noise has few).
"""

from __future__ import annotations

import pytest
import torch

from fracturescan.explain import pointing_game
from fracturescan.inference import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _score(run):
    predictor = Predictor.from_checkpoint(run.run, device="cpu", backend="torch")
    return pointing_game(predictor, run.mura, split="valid", progress=False)


# What the heatmap method does here (measured 2026-11-27, DenseNet121 phantom models, 64 px from
# scratch unless noted, valid split, true positives, 5% margin, chance ~0.09). Plain Grad-CAM on
# features.denseblock2 depends on the training run: 0.06 / 0.37 / 0.92 for this recipe with
# training seeds 0 / 1 / 2 (seed 0 is this fixture), 0.71 / 0.03 with twice the phantoms,
# 0.90 / 0.53 / 0.33 at 96 px, 1.00 for the `make demo` model; Grad-CAM's poor runs put the peak
# on the forearm at the lower edge or on the carpus. Integrated gradients from the typical-normal
# reference (what `explain_image` uses when the checkpoint has one, as every trained checkpoint
# now does) on the same ten models: 0.77 / 0.79 / 0.98, 0.81 / 0.597, 0.98 / 0.98 / 0.71, 0.97,
# and 0.79 for a 14-epoch run. The fixture seed was not chosen to pass.
def test_trained_model_points_at_the_fracture(phantom_run) -> None:
    result = _score(phantom_run)
    assert result.method == "reference-ig"  # the trained checkpoint carries its reference
    assert result.n_true_positive >= 10, "too few true positives to judge localisation"
    assert result.score is not None and result.score >= 0.6
    # A peak placed at random would hit a (dilated) box this often: the model must beat it by far.
    assert result.chance is not None and result.score >= result.chance + 0.4


def test_shuffled_labels_point_clearly_worse(phantom_run, shuffled_run) -> None:
    true = _score(phantom_run)
    shuffled = _score(shuffled_run)
    assert [c.path for c in true.cases] == [c.path for c in shuffled.cases]  # same images
    assert shuffled.score_all_positives <= true.score_all_positives - 0.2
