"""Generic CSV/folder data sets and the patient-level hold-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from fracturescan.data.generic import load_csv, load_folder
from fracturescan.data.mura import load_mura
from fracturescan.data.records import ImageRecord
from fracturescan.data.sources import fingerprint_records, open_dataset
from fracturescan.data.split import patient_holdout
from fracturescan.errors import DatasetError

from ..conftest import write_png


def test_csv_dataset(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "img" / name)
    (tmp_path / "labels.csv").write_text(
        "path,label,study_id,split\nimg/a.png,abnormal,s1,train\nimg/b.png,0,s2,train\nimg/c.png,1,s3,valid\n"
    )
    index = open_dataset(tmp_path / "labels.csv")
    assert [r.label for r in index.train] == [1, 0]
    assert [r.study_id for r in index.valid] == ["s3"]
    assert index.train[0].path == tmp_path / "img" / "a.png"
    (tmp_path / "bad.csv").write_text("path,label\nimg/a.png,maybe\n")
    with pytest.raises(DatasetError, match="line 2: label 'maybe'"):
        load_csv(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("img/a.png,1\n")
    with pytest.raises(DatasetError, match="'path' and 'label'"):
        load_csv(tmp_path / "nohead.csv")


def test_folder_dataset_groups_studies(tmp_path: Path) -> None:
    write_png(tmp_path / "train/abnormal/case1/v1.png")
    write_png(tmp_path / "train/abnormal/case1/v2.png")
    write_png(tmp_path / "train/normal/x.png")
    write_png(tmp_path / "valid/normal/y.png")
    (tmp_path / "train/normal/notes.txt").write_text("ignored")
    index = open_dataset(tmp_path)
    assert index.kind == "folder"
    assert sorted((r.label, r.study_id) for r in index.train) == [
        (0, "train/normal/x"), (1, "train/abnormal/case1"), (1, "train/abnormal/case1")]
    assert len(index.valid) == 1
    with pytest.raises(DatasetError, match="No labelled images"):
        load_folder(tmp_path / "train" / "normal")


def test_holdout_has_no_shared_patient(mura_fixture: Path) -> None:
    records = load_mura(mura_fixture, "train", "all")
    for seed in range(10):
        train, hold = patient_holdout(records, 0.3, seed)
        assert not {r.patient_id for r in train} & {r.patient_id for r in hold}
        assert len(train) + len(hold) == len(records)
        # whole studies stay on one side too
        assert not {r.study_id for r in train} & {r.study_id for r in hold}


def test_holdout_fraction_and_stratification() -> None:
    records = [
        ImageRecord(Path(f"/x/{p}_{s}.png"), label=int(p % 3 == 0), study_id=f"p{p}s{s}", patient_id=f"p{p}")
        for p in range(300) for s in range(2)
    ]
    train, hold = patient_holdout(records, 0.1, seed=3)
    n_studies = len({r.study_id for r in hold})
    assert 55 <= n_studies <= 66  # ≈ 10% of 600 studies
    share = sum(r.label for r in hold) / len(hold)
    assert abs(share - 1 / 3) < 0.06
    assert patient_holdout(records, 0.1, seed=3) == (train, hold)
    assert patient_holdout(records, 0.1, seed=4) != (train, hold)


def test_fingerprint_changes_with_content(mura_fixture: Path) -> None:
    records = load_mura(mura_fixture, "train")
    before = fingerprint_records(records)
    assert before == fingerprint_records(records)
    write_png(records[0].path, value=200, size=(41, 32))
    assert fingerprint_records(records) != before
