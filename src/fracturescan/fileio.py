"""Small file helpers every layer shares: atomic writes and SHA-256 of a file.

A reader must see either the old file or the complete new one, never half of it, so every file
the package writes in place (checkpoint metadata, weights side files, the ONNX export, training
state, history) is written next to its target and renamed over it (``os.replace`` is atomic on
POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to write; it replaces ``target`` when the block
    ends without an exception, and is removed otherwise (a crash leaves the old file intact)."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's contents."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
