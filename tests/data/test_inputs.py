"""Inputs to predict: loose images are not averaged together; DICOM studies, MURA study folders
and CSV lists group as documented, and the grouping is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fracturescan.data.inputs import (
    CSV_COLUMN,
    DICOM_UID,
    MURA_FOLDER,
    SHARED_FOLDER,
    SINGLE_IMAGE,
    collect_inputs,
)
from fracturescan.errors import DatasetError, ImageReadError

from ..conftest import write_png


def _studies(collected) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for study, path in collected:
        out.setdefault(study, []).append(Path(path).name)
    return out


def test_loose_images_are_single_image_studies(tmp_path: Path) -> None:
    for name in ("a.png", "b.jpg", "sub/c.png"):
        write_png(tmp_path / "loose" / name)
    collected = collect_inputs([tmp_path / "loose"])
    assert len(collected) == 3 and set(collected.rules.values()) == {SINGLE_IMAGE}
    assert all(len(v) == 1 for v in _studies(collected).values())
    assert "3 images in 3 studies (3 single image)" in collected.describe()
    assert "--study-per-folder" in collected.describe()
    # Told otherwise, the images of one folder form one study.
    per_folder = collect_inputs([tmp_path / "loose"], study_per_folder=True)
    assert sorted(map(sorted, _studies(per_folder).values())) == [["a.png", "b.jpg"], ["c.png"]]
    assert set(per_folder.rules.values()) == {SHARED_FOLDER}


def test_mura_study_folders_stay_one_study_each(tmp_path: Path) -> None:
    for study in ("study1_positive", "study2_negative", "study3"):
        for i in range(2):
            write_png(tmp_path / "patient00001" / study / f"image{i + 1}.png")
    write_png(tmp_path / "patient00001" / "notes" / "scan.png")
    collected = collect_inputs([tmp_path])
    studies = _studies(collected)
    assert len(studies) == 4
    mura = {s for s, rule in collected.rules.items() if rule == MURA_FOLDER}
    assert {Path(s).name for s in mura} == {"study1_positive", "study2_negative", "study3"}
    assert all(studies[s] == ["image1.png", "image2.png"] for s in mura)
    assert collected.rules[str(tmp_path / "patient00001" / "notes" / "scan.png")] == SINGLE_IMAGE


def test_dicom_groups_by_study_instance_uid_across_folders(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from tests.data.test_dicom import _make_ds, _write

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    _write(_make_ds(pixels, StudyInstanceUID="1.2.3.4"), tmp_path / "a" / "x.dcm")
    _write(_make_ds(pixels, StudyInstanceUID="1.2.3.4"), tmp_path / "b" / "y.dcm")
    _write(_make_ds(pixels, StudyInstanceUID="1.2.3.5"), tmp_path / "b" / "z.dcm")
    _write(_make_ds(pixels), tmp_path / "b" / "no_uid.dcm")
    (tmp_path / "b" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 10)
    write_png(tmp_path / "b" / "photo.png")
    collected = collect_inputs([tmp_path / "a", tmp_path / "b"])
    studies = _studies(collected)
    assert sorted(studies["1.2.3.4"]) == ["x.dcm", "y.dcm"] and studies["1.2.3.5"] == ["z.dcm"]
    assert collected.rules["1.2.3.4"] == DICOM_UID
    # Without a usable UID a DICOM file is a loose image (the reader reports a broken one later).
    for name in ("no_uid.dcm", "broken.dcm", "photo.png"):
        assert collected.rules[str(tmp_path / "b" / name)] == SINGLE_IMAGE
    assert "2 by DICOM StudyInstanceUID" in collected.describe()


def test_csv_list_with_header_and_study_column(tmp_path: Path) -> None:
    a, b, c = (write_png(tmp_path / "img" / n) for n in ("a.png", "b.png", "c.png"))
    listing = tmp_path / "lists" / "todo.csv"
    listing.parent.mkdir()
    listing.write_text(f'path,study_id\n{a},s1\n../img/b.png,s1\n"{c}",\n{tmp_path / "missing.png"},s2\n')
    collected = collect_inputs([listing])
    assert [(s, Path(p).name) for s, p in collected] == [
        ("s1", "a.png"), ("s1", "b.png"), (str(c), "c.png"), ("s2", "missing.png")]
    assert collected.rules == {"s1": CSV_COLUMN, str(c): SINGLE_IMAGE, "s2": CSV_COLUMN}
    assert Path(collected.pairs[1][1]).resolve() == b.resolve()  # relative to the CSV's folder


def test_mura_style_headerless_list(tmp_path: Path) -> None:
    # MURA's valid_image_paths.csv: no header, paths starting at MURA-v1.1/ (the CSV's own folder).
    root = tmp_path / "MURA-v1.1"
    images = [write_png(root / "valid" / "XR_WRIST" / "patient1" / "study1_positive" / f"image{i}.png")
              for i in (1, 2)]
    (root / "valid_image_paths.csv").write_text(
        "".join(f"MURA-v1.1/valid/XR_WRIST/patient1/study1_positive/image{i}.png\n" for i in (1, 2)))
    collected = collect_inputs([root / "valid_image_paths.csv"])
    assert [p.resolve() for _, p in collected] == [p.resolve() for p in images]
    assert list(collected.rules.values()) == [MURA_FOLDER]


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("file,label\nx.png,1\n", "needs a 'path' column"),
    ("path,study_id\n,s1\n", "data row 1: no path"),
])
def test_bad_lists_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    listing = tmp_path / "l.csv"
    listing.write_text(text)
    with pytest.raises(DatasetError, match=message) as err:
        collect_inputs([listing])
    assert "\n" not in str(err.value)


def test_nothing_found_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="No PNG, JPEG or DICOM images"):
        collect_inputs([tmp_path / "empty"])
