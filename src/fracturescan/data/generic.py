"""Generic labelled data sets: a CSV file or a folder of class sub-folders.

CSV: a header row with at least ``path`` and ``label`` (0/1, or normal/abnormal,
negative/positive); optional ``study_id``, ``patient_id``, ``split`` (train/valid) and
``body_part``. Relative paths are resolved against the CSV's folder. Without ``study_id`` each
image is its own study; without ``patient_id`` each study is its own patient.

Folder: ``ROOT/<class>/.../image`` where ``<class>`` is one of the label words below, optionally
under ``ROOT/train`` and ``ROOT/valid``. Images in the same sub-folder below the class folder form
one study (e.g. ``ROOT/abnormal/case17/view1.png``); images directly in the class folder are their
own studies.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DatasetError
from .records import ImageRecord, missing_files

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp"}
)
_LABEL_WORDS: dict[str, int] = {
    "0": 0,
    "1": 1,
    "normal": 0,
    "negative": 0,
    "abnormal": 1,
    "positive": 1,
    "fracture": 1,
}


def parse_label(value: str, where: str) -> int:
    """Map a label cell (0/1 or a label word) to 0/1, or raise a DatasetError naming ``where``."""
    key = str(value).strip().lower()
    if key not in _LABEL_WORDS:
        raise DatasetError(
            f"{where}: label {value!r} is not one of {', '.join(sorted(_LABEL_WORDS))}."
        )
    return _LABEL_WORDS[key]


def load_csv(csv_file: Path, split: str | None = None) -> list[ImageRecord]:
    """Read a labelled CSV; with ``split`` keep only rows of that split (``split`` column)."""
    csv_file = Path(csv_file).expanduser()
    if not csv_file.is_file():
        raise DatasetError(f"CSV file {csv_file} does not exist.")
    with csv_file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip().lower() for c in reader.fieldnames or []}
        if not {"path", "label"} <= columns:
            raise DatasetError(
                f"{csv_file.name} needs a header with 'path' and 'label' columns; found "
                f"{sorted(columns) or 'no header'}."
            )
        records = []
        for line_no, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{csv_file.name} line {line_no}"
            if not row.get("path"):
                raise DatasetError(f"{where}: empty path.")
            row_split = row.get("split", "")
            if split is not None and row_split and row_split != split:
                continue
            path = Path(row["path"]).expanduser()
            path = path if path.is_absolute() else csv_file.parent / path
            study = row.get("study_id") or str(path)
            records.append(
                ImageRecord(
                    path=path,
                    label=parse_label(row.get("label", ""), where),
                    study_id=study,
                    patient_id=row.get("patient_id") or study,
                    body_part=row.get("body_part") or "unknown",
                    split=row_split,
                )
            )
    _check_exist(records, csv_file.name)
    return records


def load_folder(root: Path, split: str = "") -> list[ImageRecord]:
    """Index ``root/<class>/...`` images (see module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Data folder {root} does not exist.")
    records = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if class_dir.name.lower() not in _LABEL_WORDS:
            continue
        label = _LABEL_WORDS[class_dir.name.lower()]
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(root)
            study = str(rel.parent) if path.parent != class_dir else str(rel.with_suffix(""))
            study_id = f"{split}/{study}" if split else study
            records.append(ImageRecord(path, label, study_id, study_id, "unknown", split))
    if not records:
        raise DatasetError(
            f"No labelled images under {root}: expected sub-folders named normal/abnormal "
            "(or 0/1, negative/positive) holding PNG, JPEG or DICOM files."
        )
    return records


def _check_exist(records: list[ImageRecord], source: str) -> None:
    missing = missing_files(records)
    if missing:
        raise DatasetError(f"{len(missing)} images listed in {source} are missing, e.g. {missing[:5]}.")
