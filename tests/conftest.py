"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Two cores on CI: two torch threads for the in-process tests (servers and workers a test starts
# get one each, so they do not fight over the cores).
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The suite never downloads: the ImageNet download tests lift this and serve files on 127.0.0.1.
os.environ["FRACTURESCAN_OFFLINE"] = "1"

#: torch's thread count for the session; every test leaves it so (see below).
SESSION_THREADS = int(os.environ["OMP_NUM_THREADS"])


def _torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Tests that run servers or workers beside the test process call ``torch.set_num_threads(1)``;
    without this, that setting outlived them and the session's phantom trainings, which come later,
    ran on one core (176 s instead of 104 s for the DenseNet121 fixture)."""
    yield
    if _torch_threads() not in (None, SESSION_THREADS):
        import torch

        torch.set_num_threads(SESSION_THREADS)


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


# ---------------------------------------------------------------------------------------------
# Trained phantom models, shared by every test of the session that needs a real trained model.
# Training DenseNet121 from scratch at 64 px takes a couple of minutes on 2 CPU cores; doing it
# once per session keeps the suite short.
# ---------------------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class PhantomRun:
    """A phantom data set and a run directory trained on it."""

    data: Path  # the data set the run trained on (MURA root, or a CSV for shuffled labels)
    mura: Path  # the phantom MURA root (true labels; has annotations.csv)
    run: Path


#: The phantom recipe shipped in configs/phantom.yaml (the one `make demo` uses).
PHANTOM_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "phantom.yaml"


@pytest.fixture(scope="session")
def phantom_mura(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom MURA v1.1 tree (320 studies, 128 px)."""
    from fracturescan.data.synth import generate_mura_phantoms

    root = tmp_path_factory.mktemp("phantoms") / "MURA-v1.1"
    generate_mura_phantoms(root, studies=320, size=128, seed=11)
    return root


def _train(data: Path, out: Path, cache: Path, **overrides: object) -> Path:
    import torch

    from fracturescan.config import load_config
    from fracturescan.training.loop import train

    # A session fixture may be set up after another fixture of the same test set one thread.
    torch.set_num_threads(SESSION_THREADS)
    train(load_config(PHANTOM_CONFIG, {"data": str(data), "out": str(out), "cache_dir": str(cache), "seed": 0,
                                       **overrides}))
    return out


@pytest.fixture(scope="session")
def phantom_run(phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    """DenseNet121 trained on the phantoms with their true labels."""
    base = tmp_path_factory.mktemp("phantom_run")
    return PhantomRun(phantom_mura, phantom_mura, _train(phantom_mura, base / "run", base / "cache"))


@pytest.fixture(scope="session")
def phantom_resnet_run(phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    """A second, different model of the same phantoms: ResNet18, 3 epochs, seed 1, 64 px (about
    30 s of CPU; its hold-out study AUC was 1.0 when written). For ensembles and comparisons."""
    base = tmp_path_factory.mktemp("phantom_resnet_run")
    return PhantomRun(phantom_mura, phantom_mura,
                      _train(phantom_mura, base / "run", base / "cache", arch="resnet18", epochs=3, seed=1))


def shuffled_label_csv(mura_root: Path, out_csv: Path, seed: int = 0) -> Path:
    """A CSV data set over the phantom images whose TRAIN study labels are randomly permuted
    (valid keeps its true labels), for checking that the model learns the fracture, not noise."""
    from fracturescan.data.mura import load_mura

    rng = np.random.default_rng(seed)
    train = load_mura(mura_root, "train")
    studies = sorted({r.study_id for r in train})
    true = {r.study_id: r.label for r in train}
    permuted = dict(zip(studies, rng.permutation([true[s] for s in studies])))
    lines = ["path,label,study_id,patient_id,split"]
    lines += [f"{r.path},{permuted[r.study_id]},{r.study_id},{r.patient_id},train" for r in train]
    lines += [f"{r.path},{r.label},{r.study_id},{r.patient_id},valid" for r in load_mura(mura_root, "valid")]
    out_csv.write_text("\n".join(lines) + "\n")
    (out_csv.parent / "SYNTHETIC.txt").write_text("Synthetic phantoms with shuffled training labels.\n")
    return out_csv


@pytest.fixture(scope="session")
def shuffled_run(phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    """The same training on the same images with shuffled training labels."""
    base = tmp_path_factory.mktemp("shuffled_run")
    data = shuffled_label_csv(phantom_mura, base / "shuffled.csv")
    return PhantomRun(data, phantom_mura, _train(data, base / "run", base / "cache"))


@dataclass(frozen=True)
class RoutedModels:
    """Wrist and finger phantoms and two small models over them: ``both`` (trained on both
    parts) and ``finger`` (trained on fingers only), in one models folder."""

    data: Path
    models: Path


@pytest.fixture(scope="session")
def routed_models(tmp_path_factory: pytest.TempPathFactory) -> RoutedModels:
    """Body-part routing needs models that record different parts: resnet18 at 32 px, one epoch
    each (about ten seconds on 2 cores; the numbers do not matter, which model answers does)."""
    from fracturescan.config import load_config
    from fracturescan.data.synth import generate_mura_phantoms
    from fracturescan.training.loop import train

    base = tmp_path_factory.mktemp("routed")
    data = generate_mura_phantoms(base / "data", 48, 48, seed=7, body_part="XR_WRIST,XR_FINGER").root
    for name, part in (("both", "all"), ("finger", "XR_FINGER")):
        train(load_config(PHANTOM_CONFIG, {
            "data": str(data), "out": str(base / "models" / name), "body_part": part, "arch": "resnet18",
            "image_size": 32, "epochs": 1, "batch_size": 16, "cache_dir": str(base / "cache"), "seed": 0}))
    return RoutedModels(data, base / "models")
