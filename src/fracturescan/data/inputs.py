"""What to predict: files, folders and CSV lists turned into images grouped into studies.

A study's probability is the mean of its images' (MURA), so grouping decides what a result
means, and unrelated images must never be averaged. The rules, in order, for each image:

1. a DICOM file with a valid StudyInstanceUID belongs to that study (the archive's own grouping,
   across folders);
2. a CSV list may name each image's study in a ``study_id`` column;
3. an image inside a MURA-style study folder (``study1``, ``study2_positive``, …) belongs to
   that folder's study;
4. any other image is a study of its own, unless ``study_per_folder`` is set: then the images
   that share a folder form one study (for a folder tree laid out one study per folder).

:class:`CollectedInputs` records which rule formed each study, so callers can say what they did.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, FracturescanError, ImageReadError
from .generic import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: How a study was formed (the values of :attr:`CollectedInputs.rules`).
DICOM_UID, CSV_COLUMN, MURA_FOLDER, SHARED_FOLDER, SINGLE_IMAGE = (
    "DICOM StudyInstanceUID", "study_id column of the CSV list", "MURA study folder", "shared folder",
    "single image")

#: A MURA study folder: ``study<N>`` with an optional ``_positive`` / ``_negative`` label.
_MURA_STUDY = re.compile(r"study\d+(_(positive|negative))?", re.IGNORECASE)
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


@dataclass(frozen=True)
class CollectedInputs:
    """Images to predict, each with its study id, and the rule that formed each study."""

    pairs: list[tuple[str, Path]]  # (study id, image path), in input order
    rules: dict[str, str]  # study id -> how it was formed (DICOM_UID, MURA_FOLDER, ...)

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        """Iterate over (study id, path) pairs, as the former list of pairs did."""
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self) -> str:
        """One line saying how the images were grouped, e.g. ``12 images in 5 studies: 3 single
        image, 2 MURA study folder``."""
        counts = Counter(self.rules.values())
        parts = ", ".join(f"{n} by {rule}" if rule in (DICOM_UID, CSV_COLUMN) else f"{n} {rule}"
                          for rule, n in counts.most_common())
        text = f"{len(self.pairs)} images in {len(self.rules)} studies ({parts})"
        if counts.get(SINGLE_IMAGE, 0) > 1:
            text += "; loose images are not averaged together (--study-per-folder groups a folder's images)"
        return text


def dicom_study_uid(path: Path) -> str | None:
    """The StudyInstanceUID of a DICOM file (header only), or None: not DICOM, no or an invalid
    UID, unreadable, or pydicom not installed (the image reader reports those later)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    has_preamble = head[128:132] == b"DICM"
    if not has_preamble and path.suffix.lower() not in _DICOM_SUFFIXES:
        return None
    from .dicom_dataset import load_dataset, safe_uid  # pydicom only when there is DICOM

    try:
        with warnings.catch_warnings():  # the image reader speaks about a damaged file later, once
            warnings.simplefilter("ignore")
            ds = load_dataset(path, pixels=False, force=not has_preamble)
            uid = safe_uid(ds.get("StudyInstanceUID", ""))
    except (FracturescanError, AttributeError, ValueError):
        return None
    return uid if uid and uid[0].isdigit() else None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))


def _resolve_listed(text: str, base: Path) -> Path:
    """A path from a CSV list: absolute as given; relative to the CSV's folder or, as in MURA's
    ``*_image_paths.csv`` (paths start at ``MURA-v1.1/``), to one of its parents."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    for root in (base, *base.parents):
        if (root / path).exists():
            return root / path
    return base / path  # missing: the reader reports it with this path


def read_path_list(csv_path: Path) -> list[tuple[Path, str | None]]:
    """(image path, study id or None) for each row of a CSV list of images.

    The CSV has a ``path`` column (and optionally ``study_id``), or no header at all, in which
    case the first column holds the paths (as MURA's ``valid_image_paths.csv``).

    Raises:
        DatasetError: the file cannot be read, has a header without a ``path`` column, or lists nothing.
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"Cannot read the image list {csv_path}: {exc}") from exc
    if not rows:
        raise DatasetError(f"The image list {csv_path} is empty.")
    header = [cell.strip().lower() for cell in rows[0]]
    looks_like_path = Path(header[0]).suffix in IMAGE_SUFFIXES or "/" in header[0]
    if looks_like_path:
        path_col, study_col, body = 0, None, rows
    elif "path" in header:
        path_col, body = header.index("path"), rows[1:]
        study_col = header.index("study_id") if "study_id" in header else None
    else:
        raise DatasetError(f"The image list {csv_path} needs a 'path' column (found {', '.join(header)}), "
                           "or no header and the paths in the first column.")
    base = csv_path.parent
    out: list[tuple[Path, str | None]] = []
    for number, row in enumerate(body, start=1):
        if len(row) <= path_col or not row[path_col].strip():
            raise DatasetError(f"{csv_path}, data row {number}: no path.")
        study = row[study_col].strip() if study_col is not None and len(row) > study_col else ""
        out.append((_resolve_listed(row[path_col].strip(), base), study or None))
    if not out:
        raise DatasetError(f"The image list {csv_path} lists no images.")
    return out


def _expand(paths: Iterable[Path | str]) -> list[tuple[Path, str | None]]:
    """Every image named by ``paths`` (files, folders searched recursively, CSV lists), with the
    study id a CSV gave it. A path that is not a folder is kept even if it cannot be opened
    (missing, a symlink loop): the reader then records why, so one bad path never stops the rest."""
    items: list[tuple[Path, str | None]] = []
    empty: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = _images_in(path)
            items.extend((p, None) for p in found)
            if not found:
                empty.append(path)
        elif path.suffix.lower() == ".csv" and path.is_file():
            items.extend(read_path_list(path))
        else:
            items.append((path, None))
    if items:  # with nothing at all, the caller's error says it once
        for folder in empty:
            log.warning("No PNG, JPEG or DICOM images found in folder %s", folder)
    return items


def _study_of(path: Path, listed: str | None, study_per_folder: bool) -> tuple[str, str]:
    """(study id, rule) for one image; see the module docstring for the order of the rules."""
    uid = dicom_study_uid(path)
    if uid:
        return uid, DICOM_UID
    if listed:
        return listed, CSV_COLUMN
    if _MURA_STUDY.fullmatch(path.parent.name):
        return str(path.parent), MURA_FOLDER
    if study_per_folder:
        return str(path.parent), SHARED_FOLDER
    return str(path), SINGLE_IMAGE


def collect_inputs(paths: Iterable[Path | str], *, study_per_folder: bool = False) -> CollectedInputs:
    """Expand files, folders and CSV lists into images grouped into studies (rules in the module
    docstring).

    Raises:
        ImageReadError: no image was found in any of the paths.
        DatasetError: a CSV list cannot be read.
    """
    pairs: list[tuple[str, Path]] = []
    rules: dict[str, str] = {}
    for path, listed in _expand(paths):
        study, rule = _study_of(path, listed, study_per_folder)
        pairs.append((study, path))
        rules.setdefault(study, rule)
    if not pairs:
        raise ImageReadError("No PNG, JPEG or DICOM images found in the given paths.")
    return CollectedInputs(pairs, rules)
