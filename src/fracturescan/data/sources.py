"""One entry point that opens any supported data set: MURA v1.1, a labelled CSV or a folder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from . import generic, mura
from .records import ImageRecord

SYNTHETIC_MARKER = "SYNTHETIC.txt"


@dataclass(frozen=True)
class DataIndex:
    """The labelled images of a data set, split into ``train`` and ``valid`` (test) parts.

    ``valid`` is MURA's test set: never tune on it. ``synthetic`` is True when the data are the
    generated phantoms (the root holds ``SYNTHETIC.txt``).
    """

    root: Path
    kind: str
    train: tuple[ImageRecord, ...]
    valid: tuple[ImageRecord, ...]
    synthetic: bool

    def split(self, name: str) -> tuple[ImageRecord, ...]:
        """Records of split ``name`` (``train`` or ``valid``)."""
        if name not in ("train", "valid"):
            raise DatasetError(f"Unknown split {name!r}: use train or valid.")
        records = self.train if name == "train" else self.valid
        if not records:
            raise DatasetError(f"The data set at {self.root} has no images in split {name!r}.")
        return records


def open_dataset(path: Path, body_parts: str | list[str] | None = "XR_WRIST") -> DataIndex:
    """Open MURA v1.1 (``body_parts`` applies), a labelled CSV or a class-folder tree."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"Data path {path} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path} is a file but not a CSV: give a MURA folder, a CSV or a folder.")
        train = generic.load_csv(path, "train")
        valid = [r for r in generic.load_csv(path, "valid") if r.split == "valid"]
        train = [r for r in train if r.split != "valid"]
        return DataIndex(path, "csv", tuple(train), tuple(valid), is_synthetic(path.parent))
    if mura.is_mura_root(path):
        root = mura.find_mura_root(path)
        splits = {
            s: tuple(mura.load_mura(root, s, body_parts))
            for s in mura.SPLITS
            if (root / f"{s}_image_paths.csv").is_file()
        }
        return DataIndex(root, "mura", splits.get("train", ()), splits.get("valid", ()), is_synthetic(root))
    if (path / "train").is_dir():
        valid = generic.load_folder(path / "valid", "valid") if (path / "valid").is_dir() else []
        train = generic.load_folder(path / "train", "train")
        return DataIndex(path, "folder", tuple(train), tuple(valid), is_synthetic(path))
    return DataIndex(path, "folder", tuple(generic.load_folder(path, "train")), (), is_synthetic(path))


def is_synthetic(root: Path) -> bool:
    """True if ``root`` holds the generated phantoms (its ``SYNTHETIC.txt`` exists)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


def fingerprint_records(records: list[ImageRecord] | tuple[ImageRecord, ...], extra: str = "") -> str:
    """SHA-256 (hex, 16 chars) of the ordered file list with sizes, mtimes and labels.

    Changes whenever an image is added, removed, relabelled or rewritten.
    """
    digest = hashlib.sha256(extra.encode())
    for r in records:
        stat = r.path.stat()
        digest.update(f"{r.path}|{stat.st_size}|{stat.st_mtime_ns}|{r.label}|{r.study_id}\n".encode())
    return digest.hexdigest()[:16]
