"""The per-body-part table (MURA paper): checked against scikit-learn on the predictions file."""

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
from fracturescan.evaluation.body_parts import body_part_table
from fracturescan.evaluation.report import write_evaluation_report

THRESHOLD = 0.5
PARTS = ("XR_WRIST", "XR_FINGER", "XR_ELBOW")


def _fake(seed: int = 1) -> dict[str, Any]:
    """Three parts with different separability, so their rows really differ."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = defaultdict(list)
    for pat in range(90):
        part = PARTS[pat % 3]
        signal = {"XR_WRIST": 0.4, "XR_FINGER": 0.2, "XR_ELBOW": 0.05}[part]
        for st in range(int(rng.integers(1, 3))):
            label = int(rng.random() < 0.45)
            sid = f"valid/{part}/patient{pat:05d}/study{st + 1}"
            for im in range(int(rng.integers(1, 4))):
                cols["paths"].append(f"/d/{sid}/image{im + 1}.png")
                cols["study_ids"].append(sid)
                cols["patient_ids"].append(f"patient{pat:05d}")
                cols["y_true"].append(label)
                cols["y_prob"].append(float(np.clip(rng.normal(0.35 + signal * label, 0.2), 0, 1)))
                cols["body_parts"].append(part)
    return dict(cols)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("parts")
    metrics = write_evaluation_report(out, **_fake(), threshold=THRESHOLD, threshold_source="test",
                                      split="valid", model_info={}, synthetic=True, n_boot=200, seed=3)
    return out, metrics


def _studies_from_predictions_file(path: Path) -> dict[str, tuple[str, int, float]]:
    """study -> (body part, label, mean image probability), read from predictions.csv alone."""
    probs: dict[str, list[float]] = defaultdict(list)
    info: dict[str, tuple[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            probs[row["study_id"]].append(float(row["prob"]))
            info[row["study_id"]] = (row["body_part"], int(row["label"]))
    return {s: (info[s][0], info[s][1], float(np.mean(p))) for s, p in probs.items()}


def test_per_part_rows_match_sklearn_on_the_predictions_file(report: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = report
    studies = _studies_from_predictions_file(out / "predictions.csv")
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["per_body_part"]
    rows = {row["body_part"]: row for row in on_disk["rows"]}
    assert list(rows) == sorted(PARTS) + ["pooled"]
    for name, row in rows.items():
        mine = [v for v in studies.values() if name == "pooled" or v[0] == name]
        y = np.array([v[1] for v in mine])
        p = np.array([v[2] for v in mine])
        pred = (p >= THRESHOLD).astype(int)
        assert row["studies"] == len(mine) and row["abnormal_studies"] == int(y.sum())
        assert row["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-12)
        assert row["auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
        assert row["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
        assert row["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred), abs=1e-12)
        for key in ("kappa", "auc", "recall", "specificity"):
            low, high = row[f"{key}_ci95"]
            assert low <= row[key] + 1e-9 and row[key] - 1e-9 <= high, (name, key)
    # The parts were built with different separability: the table must show it.
    assert rows["XR_WRIST"]["auc"] > rows["XR_FINGER"]["auc"] > rows["XR_ELBOW"]["auc"]


def test_pooled_row_is_the_study_level(report: tuple[Path, dict[str, Any]]) -> None:
    _, metrics = report
    pooled = metrics["per_body_part"]["rows"][-1]
    study = metrics["study_level"]
    for key in ("kappa", "auc", "recall", "specificity"):
        assert pooled[key] == pytest.approx(study["metrics"][key], abs=1e-12)
        assert pooled[f"{key}_ci95"] == pytest.approx(study["ci95"][key], abs=1e-12)


def test_report_shows_the_table_and_csvs_carry_the_part(report: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = report
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    wrist = metrics["per_body_part"]["rows"][[r["body_part"] for r in metrics["per_body_part"]["rows"]].index("XR_WRIST")]
    for text in (md, html):
        assert "Per body part" in text and "XR_FINGER" in text and "pooled" in text
        assert f"{wrist['kappa']:.3f}" in text
    with (out / "study_predictions.csv").open(newline="", encoding="utf-8") as handle:
        assert {row["body_part"] for row in csv.DictReader(handle)} == set(PARTS)


def test_a_study_with_two_body_parts_is_refused() -> None:
    with pytest.raises(DatasetError, match="study s1 has images of XR_WRIST and XR_HAND"):
        body_part_table(["s1", "s1", "s2"], ["XR_WRIST", "XR_HAND", "XR_WRIST"], [1, 1, 0], [0.9, 0.8, 0.1], 0.5)
    with pytest.raises(DatasetError, match="2 body parts for 3 images"):
        body_part_table(["s1", "s1", "s2"], ["XR_WRIST", "XR_WRIST"], [1, 1, 0], [0.9, 0.8, 0.1], 0.5)


def test_a_part_with_one_class_has_no_auc_but_a_row() -> None:
    table = body_part_table(["a", "b", "c", "d"], ["XR_HAND", "XR_HAND", "XR_WRIST", "XR_WRIST"],
                            [0, 0, 0, 1], [0.2, 0.7, 0.3, 0.8], 0.5, n_boot=50)
    hand = table["rows"][0]
    assert hand["body_part"] == "XR_HAND" and hand["auc"] is None and hand["recall"] is None
    assert hand["specificity"] == 0.5
