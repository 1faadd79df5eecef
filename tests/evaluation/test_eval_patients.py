"""Intervals resample patients (a patient can have several studies); the HTML report is one file;
the training-curves figure marks the run's own best epoch."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fracturescan.evaluation import plots
from fracturescan.evaluation.bootstrap import bootstrap_ci
from fracturescan.evaluation.compare import compare_runs, load_evaluation
from fracturescan.evaluation.report import write_evaluation_report
from fracturescan.training.monitor import best_epoch


def _width(ci: tuple[float, float] | None) -> float:
    assert ci is not None
    return ci[1] - ci[0]


def test_one_patient_with_many_studies_widens_the_interval() -> None:
    # 30 one-study patients all called right, and one patient whose 30 studies are all called
    # wrong: accuracy 0.5. Whether that patient is drawn 0, 1 or 2 times moves accuracy a lot,
    # which treating the 30 studies as independent hides.
    y = np.ones(60, int)
    p = np.r_[np.full(30, 0.9), np.full(30, 0.1)]
    patients = [f"p{i}" for i in range(30)] + ["many"] * 30
    clustered = bootstrap_ci(y, p, 0.5, patients, n_boot=2000, seed=0)["accuracy"]
    independent = bootstrap_ci(y, p, 0.5, None, n_boot=2000, seed=0)["accuracy"]
    assert _width(clustered) > 2 * _width(independent)
    # With the many-study patient drawn once among 31 patients on average, the centre stays near 0.5.
    assert clustered[0] < 0.5 < clustered[1]


def test_patient_resampling_covers_the_truth_and_study_resampling_does_not() -> None:
    # Each patient has 4 studies that are all right or all wrong (a "hard" patient, prob 0.3):
    # the true accuracy is 0.7. Over repeated test sets, a 95% interval should contain 0.7 about
    # 95% of the time; resampling studies pretends there are 4x more independent units.
    rng = np.random.default_rng(3)
    n_patients, per_patient, trials = 40, 4, 150
    patients = np.repeat(np.arange(n_patients), per_patient)
    hits = {"patient": 0, "study": 0}
    for trial in range(trials):
        hard = rng.random(n_patients) < 0.3
        y = rng.integers(0, 2, n_patients * per_patient)
        wrong = hard[patients]
        p = np.where((y == 1) ^ wrong, 0.8, 0.2)
        for unit, groups in (("patient", patients), ("study", None)):
            low, high = bootstrap_ci(y, p, 0.5, groups, n_boot=300, seed=trial)["accuracy"]
            hits[unit] += low <= 0.7 <= high
    assert hits["patient"] / trials >= 0.88
    assert hits["study"] / trials <= 0.8


def _fake_eval_inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {"paths": [], "study_ids": [], "patient_ids": [], "y_true": [], "y_prob": []}
    for pat in range(25):
        for st in range(int(rng.integers(1, 4))):
            label = int(rng.random() < 0.4)
            for im in range(int(rng.integers(1, 3))):
                cols["paths"].append(f"/d/patient{pat}/study{st}/image{im}.png")
                cols["study_ids"].append(f"patient{pat}/study{st}")
                cols["patient_ids"].append(f"patient{pat}")
                cols["y_true"].append(label)
                cols["y_prob"].append(float(np.clip(rng.normal(0.3 + 0.4 * label, 0.2), 0, 1)))
    return cols


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("report")
    history = out.parent / "history.csv"
    # val_loss is lowest at epoch 2, val_auc highest at epoch 3: the mark must follow the monitor.
    history.write_text("epoch,train_loss,val_loss,val_auc\n1,0.7,0.6,0.6\n2,0.5,0.4,0.7\n3,0.4,0.5,0.8\n")
    data = _fake_eval_inputs()
    metrics = write_evaluation_report(out, **data, threshold=0.5, threshold_source="test", split="valid",
                                      model_info={}, synthetic=True, history_csv=history, monitor="val_loss",
                                      n_boot=200, seed=4)
    return out, data, metrics


def test_report_intervals_resample_patients(report) -> None:
    out, data, metrics = report
    with (out / "study_predictions.csv").open(newline="") as handle:
        studies = list(csv.DictReader(handle))
    y = np.array([int(s["label"]) for s in studies])
    p = np.array([float(s["prob"]) for s in studies])
    expected = bootstrap_ci(y, p, 0.5, [s["patient_id"] for s in studies], n_boot=200, seed=4)
    assert metrics["study_level"]["ci95"]["auc"] == pytest.approx(list(expected["auc"]))
    image = bootstrap_ci(data["y_true"], data["y_prob"], 0.5, data["patient_ids"], n_boot=200, seed=4)
    assert metrics["image_level"]["ci95"]["kappa"] == pytest.approx(list(image["kappa"]))
    assert metrics["bootstrap"]["resampling_unit"] == "patient"


def test_html_report_embeds_every_figure(report) -> None:
    out, _, metrics = report
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(metrics["files"]["figures"])
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources if s.startswith("data:image/png;base64,")}
    on_disk = {(out / rel).read_bytes() for rel in metrics["files"]["figures"].values()}
    assert embedded == on_disk and len(embedded) == len(sources)  # nothing linked, every figure inline


def test_training_curve_marks_the_monitored_best_epoch(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text("epoch,val_loss,val_auc\n1,0.6,0.6\n2,0.4,0.7\n3,0.5,0.8\n4,,0.75\n")
    with history.open() as handle:
        rows = list(csv.DictReader(handle))
    columns = {k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in rows[0]}
    assert plots.best_epoch_marker(columns, "val_loss") == (best_epoch(rows, "val_loss"),
                                                          "best epoch 2 (lowest hold-out loss; the kept checkpoint)")
    assert plots.best_epoch_marker(columns, "val_auc")[0] == best_epoch(rows, "val_auc") == 3
    assert plots.best_epoch_marker(columns, "val_study_auc") is None  # not logged: no mark
    assert plots.plot_training_curves(history, tmp_path / "t.png", monitor="val_auc").is_file()


def test_compare_resamples_patients(tmp_path: Path) -> None:
    # Two runs on the same studies; one patient holds half of them. Paired intervals must match a
    # patient-level bootstrap of the studies, not a study-level one.
    rng = np.random.default_rng(5)
    n = 60
    ids = [f"s{i:03d}" for i in range(n)]
    patients = ["big" if i < n // 2 else f"p{i}" for i in range(n)]
    y = rng.integers(0, 2, n)
    runs = []
    for name, noise in (("a", 0.3), ("b", 0.5)):
        p = np.clip(0.3 + 0.4 * y + rng.normal(0, noise, n), 0, 1)
        folder = tmp_path / name / "eval_valid"  # the two files compare reads, as evaluate writes them
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"split": "valid", "threshold": {"value": 0.5}}))
        with (folder / "study_predictions.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([("study_id", "patient_id", "n_images", "label", "prob", "decision"),
                                          *zip(ids, patients, [1] * n, y, p.tolist(), (p >= 0.5).astype(int))])
        runs.append(load_evaluation(tmp_path / name))
    assert list(runs[0].patient_ids) == patients  # sorted by study id, which is the input order here
    result = compare_runs(runs, n_boot=500, seed=0)
    alone = bootstrap_ci(runs[0].y_true, runs[0].y_prob, 0.5, patients, n_boot=500, seed=0)
    assert result["models"][0]["ci95"]["accuracy"] == pytest.approx(list(alone["accuracy"]))
