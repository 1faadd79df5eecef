"""The preprocessed image cache (this project's equivalent of the original design's TFRecords).

Each image is decoded once (PNG/JPEG/DICOM), squashed to ``size × size`` and stored as uint8 in a
memory-mapped ``.npy`` array. The cache key is a fingerprint of the ordered file list (paths,
sizes, modification times, labels) and the size, so a changed data set never reuses stale pixels,
and an unchanged one is reused across runs and processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import DatasetError, FracturescanError
from .images import read_image, resize_square
from .records import ImageRecord
from .sources import fingerprint_records

log = logging.getLogger(__name__)

#: Bump when decoding or resizing changes, so old caches are not reused.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$FRACTURESCAN_CACHE`` or ``~/.cache/fracturescan``."""
    env = os.environ.get("FRACTURESCAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fracturescan"


@dataclass(frozen=True)
class CachedImages:
    """Decoded images of ``records`` (row i = records[i]); ``skipped`` lists unreadable files."""

    key: str
    pixels: np.ndarray  # (N, size, size) uint8, memory-mapped
    records: tuple[ImageRecord, ...]
    skipped: tuple[tuple[str, str], ...]  # (path, reason)

    @property
    def labels(self) -> np.ndarray:
        """Labels as a float32 vector aligned with ``pixels``."""
        return np.array([r.label for r in self.records], dtype=np.float32)


def cache_key(records: list[ImageRecord] | tuple[ImageRecord, ...], size: int) -> str:
    """Fingerprint of the file list, image size and cache format."""
    base = fingerprint_records(records, extra=f"cache{CACHE_FORMAT}|{size}")
    return hashlib.sha256(base.encode()).hexdigest()[:20]


def _decode(record: ImageRecord, size: int) -> np.ndarray | str:
    try:
        return resize_square(read_image(record.path), size)
    except FracturescanError as exc:
        return str(exc)


def build_cache(
    records: list[ImageRecord] | tuple[ImageRecord, ...],
    size: int,
    cache_dir: Path | None = None,
    *,
    workers: int | None = None,
    desc: str = "decoding",
) -> CachedImages:
    """Return the cached images for ``records``, decoding them first if no cache exists.

    Unreadable images are skipped and listed in ``skipped`` with the reason; the caller decides
    whether that is acceptable. Raises DatasetError if no image could be read.
    """
    if not records:
        raise DatasetError("No images to cache.")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(records, size)
    final = cache_dir / key
    if (final / "index.json").is_file():
        log.info("Reusing image cache %s", final)
        return _open(final, key, records)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        _write(tmp, records, size, workers, desc)
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _open(final, key, records)


def _write(folder: Path, records, size: int, workers: int | None, desc: str) -> None:
    array = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(len(records), size, size))
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda r: _decode(r, size), records)
        for i, result in enumerate(tqdm(results, total=len(records), desc=desc, unit="img")):
            if isinstance(result, str):
                skipped.append((str(records[i].path), result))
                continue
            array[len(kept)] = result
            kept.append(i)
    array.flush()
    del array
    if not kept:
        raise DatasetError(f"None of the {len(records)} images could be read; first error: {skipped[0][1]}")
    index = {"format": CACHE_FORMAT, "size": size, "rows": kept, "skipped": skipped}
    (folder / "index.json").write_text(json.dumps(index))


def _open(folder: Path, key: str, records) -> CachedImages:
    index = json.loads((folder / "index.json").read_text())
    pixels = np.load(folder / "images.npy", mmap_mode="r")[: len(index["rows"])]
    kept = tuple(records[i] for i in index["rows"])
    skipped = tuple((p, reason) for p, reason in index["skipped"])
    for path, reason in skipped:
        log.warning("Skipped unreadable image %s: %s", path, reason)
    return CachedImages(key, pixels, kept, skipped)
