"""Write a synthetic data set (wrist and finger phantoms) in the exact MURA v1.1 layout.

The folder written is a drop-in stand-in for the unpacked ``MURA-v1.1/`` download (same CSV
files, same path prefix, same folder names), filled with phantoms from :mod:`.phantom` (wrists,
``XR_WRIST``, the default) and :mod:`.phantom_finger` (``XR_FINGER``), plus ``annotations.csv``
(fracture boxes, which real MURA lacks) and ``SYNTHETIC.txt``, whose presence marks the data as
synthetic for every report built from it.

With several body parts the studies are shared out evenly; each part gets its own patients,
split and label balance, and the first part is planned exactly as a one-part set would be.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import ConfigError
from .phantom import VIEWS, render_wrist
from .phantom_anatomy import sample_anatomy
from .phantom_finger import render_finger, sample_finger
from .records import BODY_PARTS
from .sources import SYNTHETIC_MARKER as MARKER_FILE
from .sources import is_synthetic as synthetic_marker

log = logging.getLogger(__name__)

#: Bumped whenever the rendering changes, so data sets can be told apart.
GENERATOR_VERSION = "1"
_PREFIX = "MURA-v1.1"
_VIEW_PROBS = (0.1, 0.35, 0.4, 0.15)  # chance of 1, 2, 3, 4 views in a study
_STUDY_PROBS = (0.55, 0.3, 0.15)  # chance of 1, 2, 3 studies per patient
#: Body parts with a phantom anatomy: (noun for SYNTHETIC.txt, anatomy sampler, renderer).
PHANTOM_PARTS: dict[str, tuple[str, Callable[..., Any], Callable[..., Any]]] = {
    "XR_WRIST": ("wrist", sample_anatomy, render_wrist),
    "XR_FINGER": ("finger", sample_finger, render_finger),
}
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
    body_part: str = "XR_WRIST"


def phantom_parts(body_part: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"XR_WRIST"``, ``"finger"``, ``"XR_WRIST,XR_FINGER"`` or a list -> checked MURA names.

    Raises:
        ConfigError: a part that is not a MURA body part, or one without a phantom anatomy.
    """
    items = body_part.split(",") if isinstance(body_part, str) else list(body_part)
    parts: list[str] = []
    for item in (str(i).strip().upper() for i in items if str(i).strip()):
        name = item if item.startswith("XR_") else f"XR_{item}"
        if name not in BODY_PARTS:
            raise ConfigError(f"Unknown body part {item!r}: choose one of {', '.join(BODY_PARTS)}.")
        if name not in PHANTOM_PARTS:
            raise ConfigError(f"No phantom anatomy for {name}: phantoms exist for "
                              f"{', '.join(PHANTOM_PARTS)}.")
        if name not in parts:
            parts.append(name)
    if not parts:
        raise ConfigError(f"No body part given: choose from {', '.join(PHANTOM_PARTS)}.")
    return tuple(parts)


def _validate(studies: int, size: int, valid_fraction: float, positive_fraction: float,
              parts: tuple[str, ...]) -> None:
    if studies < 2 * len(parts):
        raise ConfigError(f"studies must be at least {2 * len(parts)} (one per split and body part), "
                          f"got {studies}.")
    if size < 32:
        raise ConfigError(f"size must be at least 32 pixels, got {size}.")
    fractions = (("valid_fraction", valid_fraction), ("positive_fraction", positive_fraction))
    for name, value in fractions:
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value}.")


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


def _plan_parts(seed: int, studies: int, valid_fraction: float, positive_fraction: float,
                parts: tuple[str, ...]) -> list[_Study]:
    """Each part's own plan (the first on the one-part stream); patients renumbered so that all
    train patients come before all valid ones, as in a one-part set."""
    plan: list[_Study] = []
    for k, part in enumerate(parts):
        n = studies // len(parts) + (k < studies % len(parts))
        stream = [seed, 1_000_003] if k == 0 else [seed, 1_000_003, k]  # a stream apart from the studies'
        plan += [replace(s, body_part=part, index=len(plan) + s.index, patient=s.patient + 100_000 * k)
                 for s in _plan(np.random.default_rng(stream), n, valid_fraction, positive_fraction)]
    plan.sort(key=lambda s: s.split != "train")  # stable: parts and patients keep their order
    numbers: dict[int, int] = {}
    for s in plan:
        numbers.setdefault(s.patient, len(numbers) + 1)
    return [replace(s, patient=numbers[s.patient]) for s in plan]


def _study_dir(study: _Study) -> str:
    kind = "positive" if study.label else "negative"
    return f"{study.split}/{study.body_part}/patient{study.patient:05d}/study{study.number}_{kind}/"


def _write_study(out: Path, study: _Study, size: int, seed: int,
                 ) -> list[tuple[str, tuple[int, int, int, int] | None]]:
    """Render and save one study's views; return (dataset path, box) per image."""
    _, sample, render = PHANTOM_PARTS[study.body_part]
    rng = np.random.default_rng([seed, study.index])
    anatomy = sample(rng, fracture=bool(study.label))
    n_views = int(rng.choice(4, p=_VIEW_PROBS)) + 1
    views = ["PA", "LAT", "OBL", "PA"][:n_views]
    rng.shuffle(views)
    rel = _study_dir(study)
    (out / rel).mkdir(parents=True, exist_ok=True)
    written = []
    for j, view in enumerate(views, start=1):
        width = int(round(size * rng.uniform(0.7, 1.0)))
        img, box = render(rng, size, width, view=view, anatomy=anatomy)
        Image.fromarray(img).save(out / rel / f"image{j}.png", optimize=False)
        written.append((f"{_PREFIX}/{rel}image{j}.png", box))
    return written


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def generate_mura_phantoms(
    out: Path, studies: int, size: int = 256, seed: int = 0, *, valid_fraction: float = 0.2,
    positive_fraction: float = 0.4, body_part: str | tuple[str, ...] = "XR_WRIST", overwrite: bool = False,
) -> SynthSummary:
    """Write ``studies`` phantom studies under ``out`` laid out exactly like ``MURA-v1.1/``.

    Args:
        out: data-set root (plays the role of the ``MURA-v1.1`` folder).
        studies: total number of studies (train + valid), at least 2.
        size: image height in pixels (widths vary from 0.7 to 1.0 times it), at least 32.
        seed: everything written is a pure function of the arguments.
        valid_fraction: share of studies in ``valid``; the split is by patient.
        positive_fraction: share of abnormal (fractured) studies in each split.
        body_part: the body part(s) to draw, each with its own anatomy and MURA folder:
            ``"XR_WRIST"`` (default), ``"XR_FINGER"``, or several (``"XR_WRIST,XR_FINGER"``),
            which share the studies out evenly.
        overwrite: replace an earlier phantom set in ``out`` (never a non-phantom folder).

    Raises:
        ConfigError: for out-of-range arguments or a non-empty ``out``.
    """
    parts = phantom_parts(body_part)
    _validate(studies, size, valid_fraction, positive_fraction, parts)
    out = Path(out).expanduser()
    _prepare_root(out, overwrite)
    plan = _plan_parts(seed, studies, valid_fraction, positive_fraction, parts)
    images: dict[str, list[str]] = {"train": [], "valid": []}
    study_rows: dict[str, list[str]] = {"train": [], "valid": []}
    annotations = ["image_path,x0,y0,x1,y1"]
    for study in tqdm(plan, desc="phantom studies", unit="study", disable=None):
        written = _write_study(out, study, size, seed)
        study_rows[study.split].append(f"{_PREFIX}/{_study_dir(study)},{study.label}")
        images[study.split] += [path for path, _ in written]
        annotations += [f"{path},{b[0]},{b[1]},{b[2]},{b[3]}" for path, b in written if b]
    for split in ("train", "valid"):
        _write_lines(out / f"{split}_image_paths.csv", images[split])
        _write_lines(out / f"{split}_labeled_studies.csv", study_rows[split])
    _write_lines(out / "annotations.csv", annotations)
    _write_lines(out / MARKER_FILE, [
        f"SYNTHETIC DATA: these are computer-generated "
        f"{' and '.join(PHANTOM_PARTS[p][0] for p in parts)} phantoms, not real radiographs.",
        "They exist to test the fracturescan pipeline end to end; never use them to judge "
        "clinical performance.",
        f"generator: fracturescan.data.synth version {GENERATOR_VERSION}",
        f"seed: {seed}", f"size: {size}", f"studies: {studies}", f"body_part: {','.join(parts)}",
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
