"""Write a synthetic wrist data set in the exact MURA v1.1 layout.

The folder written is a drop-in stand-in for the unpacked ``MURA-v1.1/`` download (same CSV
files, same path prefix, same folder names), filled with phantoms from :mod:`.phantom`, plus
``annotations.csv`` (fracture boxes, which real MURA lacks) and ``SYNTHETIC.txt``, whose presence
marks the data as synthetic for every report built from it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import ConfigError
from .phantom import VIEWS, render_wrist
from .phantom_anatomy import sample_anatomy
from .records import BODY_PARTS
from .sources import SYNTHETIC_MARKER as MARKER_FILE
from .sources import is_synthetic as synthetic_marker

log = logging.getLogger(__name__)

#: Bumped whenever the rendering changes, so data sets can be told apart.
GENERATOR_VERSION = "1"
_PREFIX = "MURA-v1.1"
_VIEW_PROBS = (0.1, 0.35, 0.4, 0.15)  # chance of 1, 2, 3, 4 views in a study
_STUDY_PROBS = (0.55, 0.3, 0.15)  # chance of 1, 2, 3 studies per patient
_OWN_FILES = ("train_image_paths.csv", "valid_image_paths.csv", "train_labeled_studies.csv",
              "valid_labeled_studies.csv", "annotations.csv", MARKER_FILE)


@dataclass(frozen=True)
class SplitCounts:
    """How much of one split was written."""

    studies: int
    images: int
    patients: int
    positives: int  # positive (abnormal) studies


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_mura_phantoms` wrote: the root and per-split counts."""

    root: Path
    train: SplitCounts
    valid: SplitCounts


@dataclass(frozen=True)
class _Study:
    split: str
    patient: int
    number: int
    label: int
    index: int  # global study index: seeds the study's own random stream


def _validate(studies: int, size: int, valid_fraction: float, positive_fraction: float,
              body_part: str) -> None:
    if studies < 2:
        raise ConfigError(f"studies must be at least 2 (one per split), got {studies}.")
    if size < 32:
        raise ConfigError(f"size must be at least 32 pixels, got {size}.")
    fractions = (("valid_fraction", valid_fraction), ("positive_fraction", positive_fraction))
    for name, value in fractions:
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value}.")
    if body_part not in BODY_PARTS:
        raise ConfigError(
            f"Unknown body part {body_part!r}: choose one of {', '.join(BODY_PARTS)}."
        )


def _prepare_root(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse to mix with existing files unless it is an old phantom set."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty: choose a new folder or pass overwrite=True.")
        if not synthetic_marker(out):
            raise ConfigError(f"{out} is not empty and is not a phantom data set; refusing to "
                              "overwrite it. Choose a new folder.")
        for split in ("train", "valid"):
            shutil.rmtree(out / split, ignore_errors=True)
        for name in _OWN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _plan(rng: np.random.Generator, studies: int, valid_fraction: float,
          positive_fraction: float) -> list[_Study]:
    """Patients with 1-3 studies each; the last patients form valid; balanced labels per split."""
    per_patient: list[int] = []
    while sum(per_patient) < studies:
        per_patient.append(min(int(rng.choice(3, p=_STUDY_PROBS)) + 1, studies - sum(per_patient)))
    if len(per_patient) == 1:  # both splits need a patient of their own
        per_patient = [per_patient[0] - 1, 1]
    target_valid = max(1, round(valid_fraction * studies))
    n_valid_patients, valid_studies = 0, 0
    # Whole patients go to valid from the end, never taking the first patient (train needs one).
    while valid_studies < target_valid and n_valid_patients < len(per_patient) - 1:
        n_valid_patients += 1
        valid_studies += per_patient[-n_valid_patients]
    first_valid = len(per_patient) - n_valid_patients
    plan: list[_Study] = []
    splits = (("train", range(first_valid)), ("valid", range(first_valid, len(per_patient))))
    for split, patients in splits:
        slots = [(p, k) for p in patients for k in range(1, per_patient[p] + 1)]
        for (patient, number), label in zip(slots, _labels(rng, len(slots), positive_fraction)):
            plan.append(_Study(split, patient + 1, number, label, len(plan)))
    return plan


def _labels(rng: np.random.Generator, n: int, positive_fraction: float) -> list[int]:
    """Exactly round(fraction * n) positives (both classes present when n >= 2), shuffled."""
    if n < 2:
        return [int(rng.random() < positive_fraction)] * n
    n_pos = min(max(round(positive_fraction * n), 1), n - 1)
    return [int(x) for x in rng.permutation(np.arange(n) < n_pos)]


def _study_dir(study: _Study, body_part: str) -> str:
    kind = "positive" if study.label else "negative"
    return f"{study.split}/{body_part}/patient{study.patient:05d}/study{study.number}_{kind}/"


def _write_study(out: Path, study: _Study, body_part: str, size: int, seed: int,
                 ) -> list[tuple[str, tuple[int, int, int, int] | None]]:
    """Render and save one study's views; return (dataset path, box) per image."""
    rng = np.random.default_rng([seed, study.index])
    anatomy = sample_anatomy(rng, fracture=bool(study.label))
    n_views = int(rng.choice(4, p=_VIEW_PROBS)) + 1
    views = ["PA", "LAT", "OBL", "PA"][:n_views]
    rng.shuffle(views)
    rel = _study_dir(study, body_part)
    (out / rel).mkdir(parents=True, exist_ok=True)
    written = []
    for j, view in enumerate(views, start=1):
        width = int(round(size * rng.uniform(0.7, 1.0)))
        img, box = render_wrist(rng, size, width, view=view, anatomy=anatomy)
        Image.fromarray(img).save(out / rel / f"image{j}.png", optimize=False)
        written.append((f"{_PREFIX}/{rel}image{j}.png", box))
    return written


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def generate_mura_phantoms(
    out: Path, studies: int, size: int = 256, seed: int = 0, *, valid_fraction: float = 0.2,
    positive_fraction: float = 0.4, body_part: str = "XR_WRIST", overwrite: bool = False,
) -> SynthSummary:
    """Write ``studies`` phantom studies under ``out`` laid out exactly like ``MURA-v1.1/``.

    Args:
        out: data-set root (plays the role of the ``MURA-v1.1`` folder).
        studies: total number of studies (train + valid), at least 2.
        size: image height in pixels (widths vary from 0.7 to 1.0 times it), at least 32.
        seed: everything written is a pure function of the arguments.
        valid_fraction: share of studies in ``valid``; the split is by patient.
        positive_fraction: share of abnormal (fractured) studies in each split.
        body_part: MURA folder name to file the studies under (the anatomy is always a wrist).
        overwrite: replace an earlier phantom set in ``out`` (never a non-phantom folder).

    Raises:
        ConfigError: for out-of-range arguments or a non-empty ``out``.
    """
    _validate(studies, size, valid_fraction, positive_fraction, body_part)
    out = Path(out).expanduser()
    _prepare_root(out, overwrite)
    plan_rng = np.random.default_rng([seed, 1_000_003])  # a stream apart from the studies'
    plan = _plan(plan_rng, studies, valid_fraction, positive_fraction)
    images: dict[str, list[str]] = {"train": [], "valid": []}
    study_rows: dict[str, list[str]] = {"train": [], "valid": []}
    annotations = ["image_path,x0,y0,x1,y1"]
    for study in tqdm(plan, desc="phantom studies", unit="study", disable=None):
        written = _write_study(out, study, body_part, size, seed)
        study_rows[study.split].append(f"{_PREFIX}/{_study_dir(study, body_part)},{study.label}")
        images[study.split] += [path for path, _ in written]
        annotations += [f"{path},{b[0]},{b[1]},{b[2]},{b[3]}" for path, b in written if b]
    for split in ("train", "valid"):
        _write_lines(out / f"{split}_image_paths.csv", images[split])
        _write_lines(out / f"{split}_labeled_studies.csv", study_rows[split])
    _write_lines(out / "annotations.csv", annotations)
    _write_lines(out / MARKER_FILE, [
        "SYNTHETIC DATA: these are computer-generated wrist phantoms, not real radiographs.",
        "They exist to test the fracturescan pipeline end to end; never use them to judge "
        "clinical performance.",
        f"generator: fracturescan.data.synth version {GENERATOR_VERSION}",
        f"seed: {seed}", f"size: {size}", f"studies: {studies}", f"body_part: {body_part}",
        f"views: {', '.join(VIEWS)}",
    ])
    summary = SynthSummary(out, *(_counts(plan, images, split) for split in ("train", "valid")))
    log.info("Wrote %d phantom studies to %s (train %s, valid %s)", studies, out,
             summary.train, summary.valid)
    return summary


def _counts(plan: list[_Study], images: dict[str, list[str]], split: str) -> SplitCounts:
    mine = [s for s in plan if s.split == split]
    return SplitCounts(
        studies=len(mine),
        images=len(images[split]),
        patients=len({s.patient for s in mine}),
        positives=sum(s.label for s in mine),
    )
