"""MURA v1.1 reader against a fixture in the real CSV format."""

from __future__ import annotations

from pathlib import Path

import pytest

from fracturescan.data import mura
from fracturescan.data.sources import open_dataset
from fracturescan.errors import DatasetError


def test_images_inherit_study_labels(mura_fixture: Path) -> None:
    records = mura.load_mura(mura_fixture, "train", "XR_WRIST")
    # 3+2+1+2+4+1+2 wrist images in train (the elbow study is excluded)
    assert len(records) == 15
    for r in records:
        assert r.path.is_file()
        assert r.body_part == "XR_WRIST" and r.split == "train"
        assert r.label == (1 if r.study_id.endswith("_positive") else 0)
        assert r.study_id.startswith(f"train/XR_WRIST/{r.patient_id}/study")
    assert {r.patient_id for r in records} == {f"patient0000{i}" for i in range(1, 7)}


def test_all_body_parts_and_parent_folder(mura_fixture: Path) -> None:
    # Pointing at the folder that contains MURA-v1.1/ works too.
    records = mura.load_mura(mura_fixture.parent, "train", "all")
    assert len(records) == 17
    assert {r.body_part for r in records} == {"XR_WRIST", "XR_ELBOW"}
    assert len(mura.load_mura(mura_fixture, "train", "elbow")) == 2


def test_summary_counts(mura_fixture: Path) -> None:
    records = mura.load_mura(mura_fixture, "train", "XR_WRIST") + mura.load_mura(mura_fixture, "valid", "XR_WRIST")
    rows = {(r.split, r.label): r for r in mura.summarise(records)}
    assert (rows[("train", 1)].studies, rows[("train", 1)].images, rows[("train", 1)].patients) == (3, 6, 3)
    assert (rows[("train", 0)].studies, rows[("train", 0)].images, rows[("train", 0)].patients) == (4, 9, 4)
    assert (rows[("valid", 0)].images, rows[("valid", 1)].images) == (3, 2)


def test_unknown_body_part_is_named(mura_fixture: Path) -> None:
    with pytest.raises(DatasetError, match="Unknown body part 'XR_KNEE'"):
        mura.load_mura(mura_fixture, "train", "XR_KNEE")


def test_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a MURA v1.1 root"):
        mura.find_mura_root(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        mura.find_mura_root(tmp_path / "nope")


def test_missing_image_is_reported(mura_fixture: Path) -> None:
    victim = mura_fixture / "train/XR_WRIST/patient00004/study1_negative/image3.png"
    victim.unlink()
    with pytest.raises(DatasetError, match="1 images listed in train_image_paths.csv are missing") as err:
        mura.load_mura(mura_fixture, "train")
    assert "image3.png" in str(err.value)


def test_folder_label_contradicting_csv(mura_fixture: Path) -> None:
    csv_file = mura_fixture / "train_labeled_studies.csv"
    text = csv_file.read_text().replace("patient00002/study1_negative/,0", "patient00002/study1_negative/,1")
    csv_file.write_text(text)
    with pytest.raises(DatasetError, match="line 3: study folder 'study1_negative' says negative but the CSV label is 1"):
        mura.load_mura(mura_fixture, "train")


def test_missing_study_row(mura_fixture: Path) -> None:
    csv_file = mura_fixture / "train_labeled_studies.csv"
    lines = [l for l in csv_file.read_text().splitlines() if "patient00005" not in l]
    csv_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="1 studies in train_image_paths.csv have no row"):
        mura.load_mura(mura_fixture, "train")


def test_malformed_row(mura_fixture: Path) -> None:
    (mura_fixture / "valid_labeled_studies.csv").write_text("MURA-v1.1/valid/XR_WRIST/patient1/study1_positive/,yes\n")
    with pytest.raises(DatasetError, match="line 1: expected"):
        mura.load_mura(mura_fixture, "valid")


def test_open_dataset_mura(mura_fixture: Path) -> None:
    index = open_dataset(mura_fixture, "XR_WRIST")
    assert index.kind == "mura" and not index.synthetic
    assert len(index.train) == 15 and len(index.valid) == 5
    (mura_fixture / "SYNTHETIC.txt").write_text("synthetic")
    assert open_dataset(mura_fixture, "XR_WRIST").synthetic
