"""write_evaluation_report: files, numbers recomputed independently, warnings, escaping."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from fracturescan.errors import DatasetError
from fracturescan.notices import SYNTHETIC_DATA
from fracturescan.evaluation.report import write_evaluation_report

THRESHOLD = 0.45
Written = tuple[Path, dict[str, Any], dict[str, Any]]  # (report dir, inputs, returned metrics)


def _fake(seed: int = 0, n_patients: int = 40) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = defaultdict(list)
    for pat in range(n_patients):
        for st in range(int(rng.integers(1, 3))):
            label = int(rng.random() < 0.4)
            kind = "positive" if label else "negative"
            sid = f"valid/XR_WRIST/patient{pat:05d}/study{st + 1}_{kind}"
            for im in range(int(rng.integers(1, 4))):
                cols["paths"].append(f"/data/{sid}/image{im + 1}.png")
                cols["study_ids"].append(sid)
                cols["patient_ids"].append(f"patient{pat:05d}")
                cols["y_true"].append(label)
                cols["y_prob"].append(float(np.clip(rng.normal(0.3 + 0.35 * label, 0.2), 0, 1)))
    return dict(cols)


def _report(out: Path, data: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    kwargs = dict(threshold=THRESHOLD, threshold_source="test", split="valid",
                  model_info={"architecture": "densenet121"}, synthetic=False, n_boot=100, seed=0)
    kwargs.update(overrides)
    return write_evaluation_report(out, **data, **kwargs)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    out = tmp_path_factory.mktemp("report")
    data = _fake()
    history = out.parent / "history.csv"
    history.write_text("epoch,train_loss,val_loss\n1,0.7,0.6\n2,0.5,0.55\n", encoding="utf-8")
    return out, data, _report(out, data, history_csv=history)


def _check_level(level: dict[str, Any], y: np.ndarray, p: np.ndarray) -> None:
    """Compare reported metrics with scikit-learn on the same predictions."""
    m = level["metrics"]
    pred = (p >= THRESHOLD).astype(int)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1])
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for name, ci in level["ci95"].items():
        assert ci[0] <= ci[1], name


def test_files_exist(written: Written) -> None:
    out, _, metrics = written
    for name in ("metrics.json", "predictions.csv", "study_predictions.csv", "report.md",
                 "report.html"):
        assert (out / name).is_file(), name
    for rel in metrics["files"]["figures"].values():
        assert (out / rel).is_file(), rel
    assert {"roc", "precision_recall", "calibration", "training", "confusion_image",
            "confusion_study"} <= set(metrics["files"]["figures"])
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_metrics_match_independent_computation(written: Written) -> None:
    _, data, metrics = written
    y, p = np.array(data["y_true"]), np.array(data["y_prob"])
    _check_level(metrics["image_level"], y, p)
    by_study: dict[str, list[float]] = defaultdict(list)
    label: dict[str, int] = {}
    for sid, lab, prob in zip(data["study_ids"], y, p):
        by_study[sid].append(prob)
        label[sid] = int(lab)
    ys = np.array([label[s] for s in by_study])
    ps = np.array([np.mean(v) for v in by_study.values()])
    _check_level(metrics["study_level"], ys, ps)
    assert metrics["counts"] == {
        "images": len(y), "studies": len(by_study), "patients": len(set(data["patient_ids"])),
        "abnormal_images": int(y.sum()), "abnormal_studies": int(ys.sum())}
    assert metrics["threshold"] == {"value": THRESHOLD, "source": "test"}
    assert metrics["model_info"] == {"architecture": "densenet121"}


def test_prediction_csvs(written: Written) -> None:
    out, data, _ = written
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == data["paths"]
    assert [float(r["prob"]) for r in rows] == data["y_prob"]  # full precision round-trip
    assert [int(r["decision"]) for r in rows] == [int(p >= THRESHOLD) for p in data["y_prob"]]
    with (out / "study_predictions.csv").open(newline="") as handle:
        studies = list(csv.DictReader(handle))
    assert [s["study_id"] for s in studies] == list(dict.fromkeys(data["study_ids"]))
    first = studies[0]
    probs = [p for s, p in zip(data["study_ids"], data["y_prob"]) if s == first["study_id"]]
    assert float(first["prob"]) == pytest.approx(np.mean(probs))
    assert int(first["n_images"]) == len(probs)


@pytest.mark.parametrize("synthetic", [True, False])
def test_synthetic_warning_present_iff_synthetic(tmp_path: Path, synthetic: bool) -> None:
    metrics = _report(tmp_path, _fake(1, 15), synthetic=synthetic, n_boot=20)
    assert metrics["synthetic"] is synthetic
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert (SYNTHETIC_DATA in text) is synthetic, name
        assert "not a diagnostic device" in text, name
        if synthetic:  # near the top, before any metric
            assert text.index(SYNTHETIC_DATA) < text.index("Summary")


def test_html_escapes_strings(tmp_path: Path) -> None:
    _report(tmp_path, _fake(2, 10), split="<script>alert(1)</script>", n_boot=20,
            model_info={"note": "<b>&</b>"})
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "<b>&" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;&amp;" in page


def test_inconsistent_inputs_raise(tmp_path: Path) -> None:
    split_study = {"paths": ["a.png", "b.png", "c.png"], "study_ids": ["s1", "s1", "s2"],
                   "patient_ids": ["p1", "p2", "p3"], "y_true": [1, 1, 0],
                   "y_prob": [0.9, 0.8, 0.1]}
    with pytest.raises(DatasetError, match="more than one patient"):
        _report(tmp_path, split_study, n_boot=10)
    short = _fake(3, 5)
    short["paths"] = short["paths"][:-1]
    with pytest.raises(DatasetError, match="paths"):
        _report(tmp_path, short, n_boot=10)
    with pytest.raises(DatasetError, match="history"):
        _report(tmp_path, _fake(3, 5), n_boot=10, history_csv=tmp_path / "missing.csv")
