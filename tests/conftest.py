"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Two cores on CI: one torch thread per test process keeps runs predictable.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def write_png(path: Path, value: int = 128, size: tuple[int, int] = (40, 32)) -> Path:
    """A small grayscale PNG with a gradient (so resizing is not trivial)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = (np.add.outer(np.arange(h), np.arange(w)) % 64 + value // 2).clip(0, 255).astype(np.uint8)
    Image.fromarray(arr, mode="L").save(path)
    return path


def make_mura_fixture(root: Path, spec: dict[str, list[tuple[str, str, int, int]]]) -> Path:
    """Write a MURA v1.1-format tree: spec[split] = [(body_part, patient, study_no, label, n_images)]."""
    root.mkdir(parents=True, exist_ok=True)
    for split, studies in spec.items():
        image_rows, study_rows = [], []
        for body_part, patient, study_no, label, n_images in studies:
            folder = f"{split}/{body_part}/{patient}/study{study_no}_{'positive' if label else 'negative'}"
            study_rows.append(f"MURA-v1.1/{folder}/,{label}")
            for j in range(1, n_images + 1):
                write_png(root / folder / f"image{j}.png", value=60 + 40 * label + j)
                image_rows.append(f"MURA-v1.1/{folder}/image{j}.png")
        (root / f"{split}_image_paths.csv").write_text("\n".join(image_rows) + "\n")
        (root / f"{split}_labeled_studies.csv").write_text("\n".join(study_rows) + "\n")
    return root


@pytest.fixture
def mura_fixture(tmp_path: Path) -> Path:
    """A small MURA tree with two body parts, several studies per patient, both labels."""
    spec = {
        "train": [
            ("XR_WRIST", "patient00001", 1, 1, 3),
            ("XR_WRIST", "patient00001", 2, 0, 2),
            ("XR_WRIST", "patient00002", 1, 0, 1),
            ("XR_WRIST", "patient00003", 1, 1, 2),
            ("XR_ELBOW", "patient00003", 1, 0, 2),
            ("XR_WRIST", "patient00004", 1, 0, 4),
            ("XR_WRIST", "patient00005", 1, 1, 1),
            ("XR_WRIST", "patient00006", 1, 0, 2),
        ],
        "valid": [
            ("XR_WRIST", "patient11185", 1, 1, 2),
            ("XR_WRIST", "patient11186", 1, 0, 3),
        ],
    }
    return make_mura_fixture(tmp_path / "MURA-v1.1", spec)
