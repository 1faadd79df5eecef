"""Shared test fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import phantom_models

# Two cores on CI: two torch threads for the in-process tests (servers and workers a test starts
# get one each, so they do not fight over the cores).
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The suite never downloads: the ImageNet download tests lift this and serve files on 127.0.0.1.
os.environ["FRACTURESCAN_OFFLINE"] = "1"

#: torch's thread count for the session; every test leaves it so (see below).
SESSION_THREADS = int(os.environ["OMP_NUM_THREADS"])


def _session_threads() -> int:
    """One thread while the background job trains the phantom models on the other core."""
    return 1 if BACKGROUND.running() else SESSION_THREADS


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Each test starts and ends with the session's torch thread count. Tests that run servers or
    workers beside the test process call ``torch.set_num_threads(1)``; that setting used to outlive
    them, and the session's phantom trainings ran on one core (176 s instead of 104 s for the
    DenseNet121 fixture)."""
    _set_session_threads()
    yield
    _set_session_threads()


def _set_session_threads() -> None:
    torch = sys.modules.get("torch")  # a test that never imported torch has nothing to set
    if torch is not None and torch.get_num_threads() != _session_threads():
        torch.set_num_threads(_session_threads())


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI (run in-process by CliRunner) and the web app attach log handlers to the streams of
    the moment; once a test ends those streams are closed, and a later test's log lines then fail
    with "I/O operation on closed file". Each test leaves the root and ``fracturescan`` loggers
    with the handlers and levels it found (pytest's own capture handlers excepted)."""
    import logging

    loggers = [logging.getLogger(), logging.getLogger("fracturescan")]
    saved = [(logger, set(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        for handler in list(logger.handlers):
            if handler not in handlers and type(handler).__module__ != "_pytest.logging":
                logger.removeHandler(handler)
        logger.setLevel(level)


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
# Training DenseNet121 from scratch at 64 px takes a couple of minutes on 2 CPU cores. One
# background process (tests/phantom_models.py) makes them once per session, starting as soon as
# collection shows which are needed, while the other tests run; the modules that use them run
# last. Each fixture waits for its own piece.
# ---------------------------------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[1]
#: Longest wait for one piece (the whole job takes about five minutes on 2 cores).
PIECE_TIMEOUT_S = 1800.0


class BackgroundModels:
    """The one background process that makes the trained pieces, and the fixtures' wait for them."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.names: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, phantom_models.with_requirements(names)
        root.mkdir(parents=True, exist_ok=True)
        with (root / "log.txt").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.phantom_models", str(root), *self.names], cwd=REPO,
                env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, stdout=log,
                stderr=subprocess.STDOUT)

    def wait(self, name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """Block until piece ``name`` is made; return the job's folder. A piece that collection did
        not foresee (a fixture asked for by name at run time) gets a process of its own."""
        if name not in self.names:  # one job at a time: the running one finishes first
            if self.process is not None:
                self.process.wait()
            self.start(self.root or tmp_path_factory.mktemp("phantom_models"), [name])
        assert self.root is not None and self.process is not None
        done, failed = self.root / f"{name}.done", self.root / f"{name}.failed"
        deadline = time.monotonic() + PIECE_TIMEOUT_S
        while not done.exists():
            if failed.exists():
                pytest.fail(f"making the session's {name} failed:\n{failed.read_text()}\n{self._log_tail()}",
                            pytrace=False)
            if self.process.poll() is not None and not done.exists():
                pytest.fail(f"the background job stopped (exit {self.process.returncode}) before making {name}:\n"
                            f"{self._log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{name} was not made within {PIECE_TIMEOUT_S:.0f} s:\n{self._log_tail()}",
                            pytrace=False)
            time.sleep(0.2)
        return self.root

    def _log_tail(self) -> str:
        assert self.root is not None
        return (self.root / "log.txt").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.kill()
            self.process.wait()


BACKGROUND = BackgroundModels()


@pytest.hookimpl(trylast=True)  # after -m / -k / --deselect have removed what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start making the trained pieces the selected tests need, and run their modules last."""
    pieces = list(phantom_models.PIECES)
    needs = {item: [p for p in pieces if p in getattr(item, "fixturenames", ())] for item in items}
    late_modules = {item.path for item, names in needs.items() if names}
    if not late_modules or config.option.collectonly:
        return
    late = [item for item in items if item.path in late_modules]
    items[:] = [item for item in items if item.path not in late_modules] + late
    order: list[str] = []
    for item in late:
        order += [name for name in needs[item] if name not in order]
    BACKGROUND.start(config._tmp_path_factory.mktemp("phantom_models"), order)  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    BACKGROUND.stop()


@dataclass(frozen=True)
class PhantomRun:
    """A phantom data set and a run directory trained on it."""

    data: Path  # the data set the run trained on (MURA root, or a CSV for shuffled labels)
    mura: Path  # the phantom MURA root (true labels; has annotations.csv)
    run: Path


@pytest.fixture(scope="session")
def phantom_mura(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom MURA v1.1 tree (320 studies, 128 px)."""
    return phantom_models.mura_root(BACKGROUND.wait("phantom_mura", tmp_path_factory))


def _trained(name: str, phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    root = BACKGROUND.wait(name, tmp_path_factory)
    return PhantomRun(phantom_mura, phantom_mura, phantom_models.run_dir(root, name))


@pytest.fixture(scope="session")
def phantom_run(phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    """DenseNet121 trained on the phantoms with their true labels (configs/phantom.yaml)."""
    return _trained("phantom_run", phantom_mura, tmp_path_factory)


@pytest.fixture(scope="session")
def phantom_resnet_run(phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    """A second, different model of the same phantoms: ResNet18, 3 epochs, seed 1, 64 px. For
    ensembles and comparisons."""
    return _trained("phantom_resnet_run", phantom_mura, tmp_path_factory)


@pytest.fixture(scope="session")
def shuffled_run(phantom_mura: Path, tmp_path_factory: pytest.TempPathFactory) -> PhantomRun:
    """The same training on the same images with shuffled training labels."""
    root = BACKGROUND.wait("shuffled_run", tmp_path_factory)
    return PhantomRun(phantom_models.shuffled_csv(root), phantom_mura, phantom_models.run_dir(root, "shuffled_run"))


@dataclass(frozen=True)
class RoutedModels:
    """Wrist and finger phantoms and two small models over them: ``both`` (trained on both
    parts) and ``finger`` (trained on fingers only), in one models folder."""

    data: Path
    models: Path


@pytest.fixture(scope="session")
def routed_models(tmp_path_factory: pytest.TempPathFactory) -> RoutedModels:
    """Body-part routing needs models that record different parts (resnet18 at 32 px, one epoch each)."""
    root = BACKGROUND.wait("routed_models", tmp_path_factory)
    return RoutedModels(phantom_models.routed_data(root), phantom_models.run_dir(root, "routed_models"))
