"""Tests for the wrist phantom renderer and the MURA-layout phantom writer."""

from __future__ import annotations

import csv
import dataclasses
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from fracturescan.data.phantom import VIEWS, render_wrist
from fracturescan.data.phantom_anatomy import sample_anatomy
from fracturescan.data.phantom_finger import render_finger, sample_finger
from fracturescan.data.synth import generate_mura_phantoms, synthetic_marker
from fracturescan.errors import ConfigError

SIZE = 64
STUDIES = 36
IMAGE_ROW = re.compile(
    r"^MURA-v1\.1/(train|valid)/XR_WRIST/patient(\d{5})/study(\d+)_(positive|negative)/"
    r"image(\d+)\.png$"
)
STUDY_ROW = re.compile(
    r"^MURA-v1\.1/(train|valid)/XR_WRIST/patient(\d{5})/study(\d+)_(positive|negative)/,([01])$"
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("phantoms") / "MURA-v1.1"
    summary = generate_mura_phantoms(root, STUDIES, SIZE, seed=5)
    return root, summary


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text.splitlines()


def _study_rows(root: Path, split: str) -> list[re.Match[str]]:
    rows = [STUDY_ROW.match(line) for line in _lines(root / f"{split}_labeled_studies.csv")]
    assert all(rows), "every study row must match the MURA format exactly (no header)"
    return rows  # type: ignore[return-value]


def _image_rows(root: Path, split: str) -> list[re.Match[str]]:
    rows = [IMAGE_ROW.match(line) for line in _lines(root / f"{split}_image_paths.csv")]
    assert all(rows), "every image row must match the MURA format exactly (no header)"
    return rows  # type: ignore[return-value]


def test_csv_format_and_labels_match_folders(dataset: tuple[Path, object]) -> None:
    root, _ = dataset
    for split in ("train", "valid"):
        for row in _study_rows(root, split):
            assert row.group(1) == split
            assert int(row.group(5)) == (row.group(4) == "positive")
        for row in _image_rows(root, split):
            assert row.group(1) == split
    # Every image's study is labelled and every labelled study has images.
    for split in ("train", "valid"):
        studies = {m.group(0).rsplit(",", 1)[0] for m in _study_rows(root, split)}
        image_studies = {m.group(0).rsplit("/", 1)[0] + "/" for m in _image_rows(root, split)}
        assert studies == image_studies


def test_listed_images_are_exactly_the_files_on_disk(dataset: tuple[Path, object]) -> None:
    root, _ = dataset
    listed = {
        m.group(0).removeprefix("MURA-v1.1/")
        for split in ("train", "valid")
        for m in _image_rows(root, split)
    }
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    on_disk -= {
        "train_image_paths.csv", "valid_image_paths.csv", "train_labeled_studies.csv",
        "valid_labeled_studies.csv", "annotations.csv", "SYNTHETIC.txt",
    }
    assert listed == on_disk
    for rel in sorted(listed)[:20]:
        with Image.open(root / rel) as img:
            assert img.format == "PNG" and img.mode == "L"
            assert img.height == SIZE
            assert 0.7 * SIZE - 1 <= img.width <= SIZE


def test_patients_studies_views_and_summary(dataset: tuple[Path, object]) -> None:
    root, summary = dataset
    patients: dict[str, set[int]] = {}
    views_per_study: Counter[str] = Counter()
    studies_of: dict[int, set[int]] = defaultdict(set)
    for split in ("train", "valid"):
        rows = _study_rows(root, split)
        patients[split] = {int(r.group(2)) for r in rows}
        for r in rows:
            studies_of[int(r.group(2))].add(int(r.group(3)))
        for m in _image_rows(root, split):
            views_per_study[m.group(0).rsplit("/", 1)[0]] += 1
        counts = getattr(summary, split)
        assert counts.studies == len(rows)
        assert counts.patients == len(patients[split])
        assert counts.positives == sum(int(r.group(5)) for r in rows)
        assert counts.images == len(_image_rows(root, split))
    assert not patients["train"] & patients["valid"]
    assert max(patients["train"]) < min(patients["valid"]), "train patients come first"
    assert all(sorted(s) == list(range(1, len(s) + 1)) for s in studies_of.values())
    assert max(len(s) for s in studies_of.values()) >= 2
    assert set(views_per_study.values()) <= {1, 2, 3, 4}
    assert len(set(views_per_study.values())) >= 3
    valid_share = summary.valid.studies / STUDIES
    assert 0.1 <= valid_share <= 0.35
    for counts in (summary.train, summary.valid):
        assert 0 < counts.positives < counts.studies
        assert abs(counts.positives / counts.studies - 0.4) < 0.15


def test_annotations_cover_exactly_positive_images(dataset: tuple[Path, object]) -> None:
    root, _ = dataset
    with (root / "annotations.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image_path", "x0", "y0", "x1", "y1"]
    positives = {
        m.group(0)
        for split in ("train", "valid")
        for m in _image_rows(root, split)
        if m.group(4) == "positive"
    }
    assert len(rows) - 1 == len({r[0] for r in rows[1:]}), "one row per image"
    assert {r[0] for r in rows[1:]} == positives
    for path, *coords in rows[1:]:
        x0, y0, x1, y1 = map(int, coords)
        with Image.open(root / path.removeprefix("MURA-v1.1/")) as img:
            width, height = img.size
        assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height
        assert (x1 - x0 + 1) * (y1 - y0 + 1) < 0.3 * width * height


def test_synthetic_marker_statement(dataset: tuple[Path, object], tmp_path: Path) -> None:
    root, _ = dataset
    assert synthetic_marker(root)
    assert not synthetic_marker(tmp_path)
    text = (root / "SYNTHETIC.txt").read_text(encoding="utf-8")
    assert "not real radiographs" in text
    assert "seed: 5" in text and f"size: {SIZE}" in text and f"studies: {STUDIES}" in text


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_deterministic_per_seed_and_seed_sensitive(tmp_path: Path) -> None:
    first = _tree_bytes(generate_mura_phantoms(tmp_path / "a", 6, 48, seed=11).root)
    second = _tree_bytes(generate_mura_phantoms(tmp_path / "b", 6, 48, seed=11).root)
    other = _tree_bytes(generate_mura_phantoms(tmp_path / "c", 6, 48, seed=12).root)
    assert first == second
    shared = set(first) & set(other) - {"SYNTHETIC.txt"}
    pngs = [k for k in shared if k.endswith(".png")]
    assert first["SYNTHETIC.txt"] != other["SYNTHETIC.txt"]
    assert any(first[k] != other[k] for k in pngs) or set(first) != set(other)


def test_overwrite_rules(tmp_path: Path) -> None:
    root = tmp_path / "set"
    generate_mura_phantoms(root, 4, 32, seed=0)
    with pytest.raises(ConfigError, match="not empty"):
        generate_mura_phantoms(root, 4, 32, seed=0)
    summary = generate_mura_phantoms(root, 3, 32, seed=1, overwrite=True)
    assert summary.train.studies + summary.valid.studies == 3
    assert len(list(root.rglob("*.png"))) == summary.train.images + summary.valid.images
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a phantom"):
        generate_mura_phantoms(foreign, 4, 32, overwrite=True)
    assert (foreign / "keep.txt").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"studies": 1},
        {"size": 31},
        {"valid_fraction": 0.0},
        {"valid_fraction": 1.0},
        {"positive_fraction": -0.1},
        {"positive_fraction": 1.5},
        {"body_part": "XR_KNEE"},
        {"body_part": "XR_ELBOW"},  # a MURA part without a phantom anatomy
        {"body_part": "XR_WRIST,XR_FINGER", "studies": 3},  # fewer than one per split and part
    ],
)
def test_rejects_nonsense_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"studies": 4, "size": 32}
    args.update(kwargs)
    with pytest.raises(ConfigError):
        generate_mura_phantoms(tmp_path / "x", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


PHANTOMS = {"wrist": (sample_anatomy, render_wrist), "finger": (sample_finger, render_finger)}


@pytest.mark.parametrize("part", sorted(PHANTOMS))
def test_anatomy_draws_do_not_depend_on_the_label(part: str) -> None:
    sample = PHANTOMS[part][0]
    broken = sample(np.random.default_rng(3), fracture=True)
    intact = sample(np.random.default_rng(3), fracture=False)
    assert broken.fractured and not intact.fractured
    assert dataclasses.replace(intact, fractured=True) == broken


@pytest.mark.parametrize("part", sorted(PHANTOMS))
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_fracture_changes_pixels_only_inside_its_box(view: str, part: str) -> None:
    sample, render = PHANTOMS[part]
    for seed in range(6):
        anatomy = sample(np.random.default_rng(seed), fracture=True)
        broken, box = render(
            np.random.default_rng(99 + seed), 96, 80, view=view, anatomy=anatomy
        )
        intact, none = render(
            np.random.default_rng(99 + seed), 96, 80, view=view, anatomy=anatomy, fracture=False
        )
        assert none is None and box is not None
        assert broken.shape == intact.shape == (96, 80) and broken.dtype == np.uint8
        diff = np.abs(broken.astype(np.int64) - intact.astype(np.int64))
        x0, y0, x1, y1 = box
        assert 0 <= x0 <= x1 < 80 and 0 <= y0 <= y1 < 96
        inside = diff[max(y0 - 1, 0) : y1 + 2, max(x0 - 1, 0) : x1 + 2].sum()
        assert diff.sum() > 500, "the fracture must visibly change the image"
        assert inside >= 0.9 * diff.sum()
        assert (x1 - x0 + 1) * (y1 - y0 + 1) < 0.2 * 96 * 80, "box must localise the fracture"


@pytest.mark.parametrize("part", sorted(PHANTOMS))
def test_fracture_survives_downsizing_to_64_px(part: str) -> None:
    sample, render = PHANTOMS[part]

    def small(img: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(img).resize((64, 64), Image.BILINEAR), dtype=np.float64)

    for seed, view in zip(range(6), ("PA", "OBL", "LAT") * 2):
        anatomy = sample(np.random.default_rng(seed), fracture=True)
        broken, _ = render(
            np.random.default_rng(seed + 50), 256, 200, view=view, anatomy=anatomy
        )
        intact, _ = render(
            np.random.default_rng(seed + 50), 256, 200, view=view, anatomy=anatomy, fracture=False
        )
        diff = np.abs(small(broken) - small(intact))
        assert diff.max() >= 40 and (diff > 25).sum() >= 8


def test_bone_is_brighter_than_soft_tissue_and_background() -> None:
    """A radiograph, not noise: the radius shaft beats the soft tissue, which beats the film."""
    anatomy = sample_anatomy(np.random.default_rng(0), fracture=False)
    img, _ = render_wrist(np.random.default_rng(1), 128, 128, view="PA", anatomy=anatomy)
    smooth = np.asarray(Image.fromarray(img).filter(ImageFilter.BoxBlur(1)), dtype=np.float64)
    row = smooth[int(128 * 0.75)]  # across the forearm, below the wrist and above any text
    edges = np.concatenate([row[:15], row[-15:]])
    assert edges.mean() < 50 and edges.std() < 10, "film outside the arm is dark and flat"
    background, peak = edges.mean(), row.max()
    assert peak - background > 80, "bone is much brighter than the film"
    assert row[48:80].mean() > background + 60, "the forearm sits in the middle"
    # Soft tissue: a shoulder of intermediate grey between film and bone.
    assert np.sum((row > background + 15) & (row < peak - 25)) >= 6


def test_unknown_view_is_rejected() -> None:
    anatomy = sample_anatomy(np.random.default_rng(0), fracture=False)
    with pytest.raises(ValueError, match="Unknown view"):
        render_wrist(np.random.default_rng(0), 64, 64, view="AP", anatomy=anatomy)


def test_multi_part_set_each_part_its_own_anatomy_split_and_boxes(tmp_path: Path) -> None:
    """Wrists and fingers in one MURA tree: each part has both splits and labels, its own
    patients and boxes on exactly its positive images; the first part's train studies are
    exactly those of a one-part set of the same size, so adding a part never changes them."""
    root = generate_mura_phantoms(tmp_path / "multi", 24, 48, seed=4, body_part="XR_WRIST,XR_FINGER").root
    single = generate_mura_phantoms(tmp_path / "single", 12, 48, seed=4).root
    part_row = re.compile(r"^MURA-v1\.1/(train|valid)/(XR_WRIST|XR_FINGER)/patient(\d{5})/study\d+_\w+/,([01])$")
    patients: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for split in ("train", "valid"):
        rows = [part_row.match(line) for line in _lines(root / f"{split}_labeled_studies.csv")]
        assert all(rows)
        for part in ("XR_WRIST", "XR_FINGER"):
            labels = [int(r.group(4)) for r in rows if r and r.group(2) == part]
            assert 0 < sum(labels) < len(labels), (split, part)
            patients[part][split] = {int(r.group(3)) for r in rows if r and r.group(2) == part}
    assert not patients["XR_WRIST"]["train"] & patients["XR_FINGER"]["train"]
    every_train = patients["XR_WRIST"]["train"] | patients["XR_FINGER"]["train"]
    every_valid = patients["XR_WRIST"]["valid"] | patients["XR_FINGER"]["valid"]
    assert max(every_train) < min(every_valid), "train patients come first"
    with (root / "annotations.csv").open(newline="", encoding="utf-8") as fh:
        boxed = {row[0] for row in list(csv.reader(fh))[1:]}
    positives = {line for split in ("train", "valid") for line in _lines(root / f"{split}_image_paths.csv")
                 if "_positive/" in line}
    assert boxed == positives and any("XR_FINGER" in p for p in boxed)
    wrist_train = {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / "train" / "XR_WRIST").rglob("*.png")}
    assert wrist_train == {p.relative_to(single).as_posix(): p.read_bytes()
                           for p in (single / "train" / "XR_WRIST").rglob("*.png")}
    assert "wrist and finger phantoms" in (root / "SYNTHETIC.txt").read_text(encoding="utf-8")


def test_finger_is_a_radiograph_not_noise() -> None:
    """Bone brighter than the finger's soft tissue, which is brighter than the film beside it."""
    anatomy = sample_finger(np.random.default_rng(0), fracture=False)
    img, _ = render_finger(np.random.default_rng(1), 128, 128, view="PA", anatomy=anatomy)
    smooth = np.asarray(Image.fromarray(img).filter(ImageFilter.BoxBlur(1)), dtype=np.float64)
    row = smooth[int(128 * 0.45)]  # across the proximal phalanx
    background, peak = np.median(np.concatenate([row[:20], row[-20:]])), row.max()
    assert peak - background > 80
    assert np.sum((row > background + 15) & (row < peak - 25)) >= 4, "soft tissue shoulders"
