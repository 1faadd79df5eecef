"""Paired comparison of evaluated runs: point differences, paired intervals, refusals, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from fracturescan.cli.main import main
from fracturescan.errors import DatasetError
from fracturescan.evaluation.compare import compare_runs, load_evaluation
from fracturescan.evaluation.report import write_evaluation_report


def simulate(n_studies: int, rng: np.random.Generator, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a latent 'difficulty' score per study (models add their own noise to it)."""
    y = rng.integers(0, 2, n_studies)
    return y, y * 1.2 + rng.normal(0, noise, n_studies)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def write_eval(root: Path, name: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5,
               study_ids: list[str] | None = None, split: str = "valid") -> Path:
    """An evaluation folder as `fracturescan evaluate` writes it: one image per study here."""
    ids = study_ids or [f"s{i:04d}" for i in range(len(y))]
    out = root / name / f"eval_{split}"
    write_evaluation_report(out, paths=[f"{s}/image1.png" for s in ids], study_ids=ids,
                            patient_ids=[f"p{s}" for s in ids], y_true=y, y_prob=p, threshold=threshold,
                            threshold_source="test", split=split, model_info={}, synthetic=True, n_boot=20)
    return root / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]:
    """Two evaluated runs on the same 300 studies, written once for the module (tests only read them)."""
    tmp_path = tmp_path_factory.mktemp("two_runs")
    rng = np.random.default_rng(0)
    y, latent = simulate(300, rng)
    pa = sigmoid(latent + rng.normal(0, 0.3, y.size))
    pb = sigmoid(1.4 * latent + rng.normal(0, 0.3, y.size))
    return write_eval(tmp_path, "a", y, pa, 0.5), write_eval(tmp_path, "b", y, pb, 0.6), y, pa, pb


def test_point_differences_match_an_independent_computation(two_runs) -> None:
    a, b, y, pa, pb = two_runs
    result = compare_runs([load_evaluation(a), load_evaluation(b)], n_boot=200)
    diff = result["differences"][0]["metrics"]
    assert diff["auc"]["difference"] == pytest.approx(roc_auc_score(y, pb) - roc_auc_score(y, pa), abs=1e-12)
    kappa = cohen_kappa_score(y, pb >= 0.6) - cohen_kappa_score(y, pa >= 0.5)
    assert diff["kappa"]["difference"] == pytest.approx(kappa, abs=1e-12)
    assert [m["threshold"] for m in result["models"]] == [0.5, 0.6]  # each at its own threshold
    low, high = diff["auc"]["ci95"]
    assert low <= diff["auc"]["difference"] <= high


def test_a_run_against_itself_differs_by_exactly_zero(two_runs) -> None:
    a = load_evaluation(two_runs[0])
    result = compare_runs([a, load_evaluation(two_runs[0], name="a again")], n_boot=100)
    for entry in result["differences"][0]["metrics"].values():
        assert entry["difference"] == 0 and entry["ci95"] == [0.0, 0.0] and not entry["excludes_zero"]


def test_pairing_narrows_the_interval_of_correlated_models(tmp_path: Path) -> None:
    """Two models that share most of their errors: the paired interval of the AUC difference is
    far narrower than what unpaired (independent) resampling gives."""
    rng = np.random.default_rng(1)
    y, latent = simulate(400, rng)
    pa, pb = sigmoid(latent + rng.normal(0, 0.1, y.size)), sigmoid(latent + rng.normal(0, 0.1, y.size))
    result = compare_runs([load_evaluation(write_eval(tmp_path, "a", y, pa)),
                           load_evaluation(write_eval(tmp_path, "b", y, pb))], n_boot=500)
    low, high = result["differences"][0]["metrics"]["auc"]["ci95"]
    boot = np.random.default_rng(2)
    unpaired = []
    for _ in range(500):
        ia, ib = boot.integers(0, y.size, y.size), boot.integers(0, y.size, y.size)
        if 0 < y[ia].sum() < y.size and 0 < y[ib].sum() < y.size:
            unpaired.append(roc_auc_score(y[ib], pb[ib]) - roc_auc_score(y[ia], pa[ia]))
    u_low, u_high = np.percentile(unpaired, [2.5, 97.5])
    assert (high - low) < 0.35 * (u_high - u_low)


def test_paired_interval_covers_a_zero_difference_about_95_percent_of_the_time(tmp_path: Path) -> None:
    """Simulation: two exchangeable models (same recipe, independent noise), so the true AUC
    difference is 0; the 95% interval should contain 0 in roughly 95% of data sets."""
    from fracturescan.evaluation.compare import EvaluatedRun

    rng = np.random.default_rng(3)
    covered, trials = 0, 120
    for _ in range(trials):
        y, latent = simulate(120, rng)
        runs = [EvaluatedRun(name, tmp_path, "valid", 0.5, True, np.arange(y.size).astype(str), y,
                             sigmoid(latent + rng.normal(0, 0.8, y.size))) for name in ("a", "b")]
        low, high = compare_runs(runs, n_boot=300, seed=int(rng.integers(1 << 30)))["differences"][0]["metrics"]["auc"]["ci95"]
        covered += low <= 0 <= high
    assert 0.88 <= covered / trials <= 1.0


def test_different_studies_labels_or_splits_are_refused(tmp_path: Path, two_runs) -> None:
    a, _, y, pa, _ = two_runs
    ids = [f"s{i:04d}" for i in range(len(y))]
    fewer = write_eval(tmp_path, "fewer", y[:-5], pa[:-5], study_ids=ids[:-5])
    with pytest.raises(DatasetError, match=r"different studies \(5 only in a, 0 only in fewer\)"):
        compare_runs([load_evaluation(a), load_evaluation(fewer)])
    flipped = y.copy()
    flipped[:3] = 1 - flipped[:3]
    relabelled = write_eval(tmp_path, "relabelled", flipped, pa)
    with pytest.raises(DatasetError, match="3 studies carry different labels"):
        compare_runs([load_evaluation(a), load_evaluation(relabelled)])
    with pytest.raises(DatasetError, match="no evaluation of the 'train' split"):
        load_evaluation(a, split="train")
    with pytest.raises(DatasetError, match="at least two"):
        compare_runs([load_evaluation(a)])


def test_cli_writes_the_comparison_and_fails_in_one_line(two_runs, tmp_path: Path, capsys) -> None:
    a, b, *_ = two_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out), "--n-boot", "100"]) == 0
    printed = capsys.readouterr().out
    assert "## b minus a (paired)" in printed and "SYNTHETIC" in printed
    assert {p.name for p in out.iterdir()} == {"comparison.json", "comparison.md", "roc_study.png"}
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "fracturescan evaluate" in err[0]
