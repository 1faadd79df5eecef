"""Reader for Stanford's MURA v1.1 exactly as distributed.

The download unpacks to a folder ``MURA-v1.1/`` holding four header-less CSV files and the image
tree. Every path in the CSVs starts with ``MURA-v1.1/`` (whatever the folder is called on disk),
and study paths in ``*_labeled_studies.csv`` end with a slash::

    MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png
    MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1

The label lives on the study; each image inherits it.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DatasetError
from .records import BODY_PARTS, ImageRecord, missing_files

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid")
_DIST_PREFIX = "MURA-v1.1"
_MAX_LISTED = 5


def find_mura_root(path: Path) -> Path:
    """Return the folder holding ``train_image_paths.csv`` (``path`` or ``path/MURA-v1.1``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"Data folder {path} does not exist.")
    for candidate in (path, path / _DIST_PREFIX):
        if (candidate / "train_image_paths.csv").is_file() or (
            candidate / "valid_image_paths.csv"
        ).is_file():
            return candidate
    raise DatasetError(
        f"{path} is not a MURA v1.1 root: expected train_image_paths.csv and "
        "valid_image_paths.csv in it (point --data at the unpacked MURA-v1.1 folder)."
    )


def is_mura_root(path: Path) -> bool:
    """True if ``path`` (or ``path/MURA-v1.1``) looks like a MURA v1.1 root."""
    try:
        find_mura_root(path)
    except DatasetError:
        return False
    return True


def normalise_body_parts(body_part: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Turn ``"XR_WRIST"``, ``"wrist"``, ``"all"`` or a list of those into MURA folder names."""
    if body_part is None:
        return BODY_PARTS
    items = [body_part] if isinstance(body_part, str) else list(body_part)
    parts: list[str] = []
    for item in items:
        for token in str(item).split(","):
            token = token.strip().upper()
            if not token:
                continue
            if token == "ALL":
                return BODY_PARTS
            name = token if token.startswith("XR_") else f"XR_{token}"
            if name not in BODY_PARTS:
                raise DatasetError(
                    f"Unknown body part {item!r}: choose one of {', '.join(BODY_PARTS)} or 'all'."
                )
            parts.append(name)
    if not parts:
        raise DatasetError("No body part given: use e.g. XR_WRIST or 'all'.")
    return tuple(dict.fromkeys(parts))


@dataclass(frozen=True)
class _StudyPath:
    split: str
    body_part: str
    patient_id: str
    study_folder: str

    @property
    def study_id(self) -> str:
        return f"{self.split}/{self.body_part}/{self.patient_id}/{self.study_folder}"

    @property
    def folder_label(self) -> int | None:
        if self.study_folder.endswith("_positive"):
            return 1
        if self.study_folder.endswith("_negative"):
            return 0
        return None


def _relative_parts(raw: str, csv_file: Path, line_no: int) -> tuple[str, ...]:
    """Strip the ``MURA-v1.1/`` prefix and return the remaining path components."""
    parts = PurePosixPath(raw.strip().replace("\\", "/")).parts
    if parts and parts[0] != "train" and parts[0] != "valid":
        parts = parts[1:]  # the distribution prefix, whatever the folder was renamed to
    if len(parts) < 4 or parts[0] not in SPLITS:
        raise DatasetError(
            f"{csv_file.name} line {line_no}: {raw!r} is not a MURA path "
            "(expected MURA-v1.1/<split>/XR_<PART>/patientNNNNN/studyK_<positive|negative>/...)."
        )
    return parts


def _study_path(parts: tuple[str, ...], csv_file: Path, line_no: int) -> _StudyPath:
    split, body_part, patient, study = parts[:4]
    if body_part not in BODY_PARTS:
        raise DatasetError(
            f"{csv_file.name} line {line_no}: unknown body part folder {body_part!r} "
            f"(MURA has {', '.join(BODY_PARTS)})."
        )
    return _StudyPath(split, body_part, patient, study)


def _read_csv_rows(csv_file: Path) -> list[tuple[int, list[str]]]:
    if not csv_file.is_file():
        raise DatasetError(f"Missing {csv_file.name} in {csv_file.parent}: is this MURA v1.1?")
    with csv_file.open(newline="", encoding="utf-8") as handle:
        return [(i, row) for i, row in enumerate(csv.reader(handle), start=1) if row and row[0].strip()]


def read_study_labels(root: Path, split: str) -> dict[str, int]:
    """Read ``<split>_labeled_studies.csv`` into ``{study_id: label}`` and check folder names."""
    csv_file = root / f"{split}_labeled_studies.csv"
    labels: dict[str, int] = {}
    for line_no, row in _read_csv_rows(csv_file):
        if len(row) < 2 or row[1].strip() not in {"0", "1"}:
            raise DatasetError(
                f"{csv_file.name} line {line_no}: expected '<study path>/,<0|1>', got {','.join(row)!r}."
            )
        study = _study_path(_relative_parts(row[0], csv_file, line_no), csv_file, line_no)
        label = int(row[1].strip())
        if study.folder_label is not None and study.folder_label != label:
            raise DatasetError(
                f"{csv_file.name} line {line_no}: study folder {study.study_folder!r} says "
                f"{'positive' if study.folder_label else 'negative'} but the CSV label is {label}."
            )
        labels[study.study_id] = label
    return labels


def load_mura(
    root: Path,
    split: str,
    body_parts: str | list[str] | tuple[str, ...] | None = "XR_WRIST",
    *,
    check_files: bool = True,
) -> list[ImageRecord]:
    """Index one split of MURA v1.1 as image records that inherit their study's label.

    Raises:
        DatasetError: wrong root, unknown body part, a malformed CSV row, an image whose study has
            no label row, a folder name that contradicts its label, or (with ``check_files``)
            images listed in the CSV but absent on disk.
    """
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}: MURA has {', '.join(SPLITS)}.")
    root = find_mura_root(root)
    wanted = set(normalise_body_parts(body_parts))
    labels = read_study_labels(root, split)
    csv_file = root / f"{split}_image_paths.csv"
    records: list[ImageRecord] = []
    unlabeled: list[str] = []
    for line_no, row in _read_csv_rows(csv_file):
        parts = _relative_parts(row[0], csv_file, line_no)
        study = _study_path(parts, csv_file, line_no)
        if study.split != split:
            raise DatasetError(f"{csv_file.name} line {line_no}: {row[0]!r} is not in {split}/.")
        if study.body_part not in wanted:
            continue
        if study.study_id not in labels:
            unlabeled.append(study.study_id)
            continue
        records.append(
            ImageRecord(
                path=root.joinpath(*parts),
                label=labels[study.study_id],
                study_id=study.study_id,
                patient_id=study.patient_id,
                body_part=study.body_part,
                split=split,
            )
        )
    if unlabeled:
        raise DatasetError(
            f"{len(set(unlabeled))} studies in {csv_file.name} have no row in "
            f"{split}_labeled_studies.csv, e.g. {sorted(set(unlabeled))[:_MAX_LISTED]}."
        )
    if check_files:
        missing = missing_files(records)
        if missing:
            raise DatasetError(
                f"{len(missing)} images listed in {csv_file.name} are missing on disk, e.g. "
                f"{missing[:_MAX_LISTED]}."
            )
    log.info("MURA %s %s: %d images", split, ",".join(sorted(wanted)), len(records))
    return records


@dataclass(frozen=True)
class CountRow:
    """Counts for one (split, body part, label) cell of :func:`summarise`."""

    split: str
    body_part: str
    label: int
    studies: int
    images: int
    patients: int


def summarise(records: list[ImageRecord]) -> list[CountRow]:
    """Count studies, images and patients per split, body part and label (one pass)."""
    images: Counter[tuple[str, str, int]] = Counter()
    studies: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    patients: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for r in records:
        key = (r.split, r.body_part, r.label)
        images[key] += 1
        studies[key].add(r.study_id)
        patients[key].add(r.patient_id)
    return [CountRow(*key, studies=len(studies[key]), images=images[key], patients=len(patients[key]))
            for key in sorted(images)]
