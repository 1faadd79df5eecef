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


@pytest.fixture(scope="module")
def true_score(phantom_run):
    """The true-label model's pointing game, played once for the three tests that use it."""
    torch.set_num_threads(1)
    return _score(phantom_run)


# What the heatmap method does here (measured 2026-11-27, DenseNet121 phantom models, 64 px from
# scratch unless noted, valid split, true positives, 5% margin, chance ~0.09). Plain Grad-CAM on
# features.denseblock2 depends on the training run: 0.06 / 0.37 / 0.92 for this recipe with
# training seeds 0 / 1 / 2 (seed 0 is this fixture), 0.71 / 0.03 with twice the phantoms,
# 0.90 / 0.53 / 0.33 at 96 px, 1.00 for the `make demo` model; Grad-CAM's poor runs put the peak
# on the forearm at the lower edge or on the carpus. Integrated gradients from the typical-normal
# reference (what `explain_image` uses when the checkpoint has one, as every trained checkpoint
# now does) on the same ten models: 0.77 / 0.79 / 0.98, 0.81 / 0.597, 0.98 / 0.98 / 0.71, 0.97,
# and 0.79 for a 14-epoch run. The fixture seed was not chosen to pass.
def test_trained_model_points_at_the_fracture(true_score) -> None:
    result = true_score
    assert result.method == "reference-ig"  # the trained checkpoint carries its reference
    assert result.n_true_positive >= 10, "too few true positives to judge localisation"
    assert result.score is not None and result.score >= 0.6
    # A peak placed at random would hit a (dilated) box this often: the model must beat it by far.
    assert result.chance is not None and result.score >= result.chance + 0.4


def test_shuffled_labels_point_clearly_worse(true_score, shuffled_run) -> None:
    true = true_score
    shuffled = _score(shuffled_run)
    assert [c.path for c in true.cases] == [c.path for c in shuffled.cases]  # same images
    assert shuffled.score_all_positives <= true.score_all_positives - 0.2


def test_untrained_network_points_clearly_worse(phantom_run, true_score, tmp_path) -> None:
    """Model-randomisation sanity check (Adebayo et al., 2018): the same architecture with random
    weights, given its own typical-normal reference from the same normal training images, must
    not localise like the trained model, or the heatmap would show the data, not the model.
    Measured 2026-11-27 on random inits: 0.22 and 0.12 (Grad-CAM 0.19 and 0.00)."""
    import numpy as np

    from fracturescan.data.cache import build_cache
    from fracturescan.data.mura import load_mura
    from fracturescan.explain.reference import compute_reference, save_reference
    from fracturescan.models.checkpoint import read_metadata, save_checkpoint
    from fracturescan.models.network import FractureNet
    from fracturescan.models.preprocessing import Preprocessing

    meta = read_metadata(phantom_run.run / "best")
    torch.manual_seed(123)
    model = FractureNet(meta.arch, hidden=meta.hidden, dropout=meta.dropout).eval()
    ckpt = save_checkpoint(tmp_path / "random", model, {"input_size": meta.input_size, "threshold": 0.0,
                                                         "synthetic": True})
    normals = [r for r in load_mura(phantom_run.mura, "train") if r.label == 0]
    pixels = np.array(build_cache(normals, meta.input_size, None, desc="normals").pixels)
    save_reference(ckpt, compute_reference(model, pixels, preprocessing=Preprocessing.from_metadata(meta)))
    random = pointing_game(Predictor.from_checkpoint(ckpt, device="cpu", backend="torch"), phantom_run.mura,
                           split="valid", progress=False)
    true = true_score
    assert random.method == "reference-ig" and random.n_annotated_positive == true.n_annotated_positive
    assert random.score_all_positives <= true.score_all_positives - 0.3
