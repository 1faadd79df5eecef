"""Fixtures for the web app tests: a tiny checkpoint, a database, users, an AppTest factory."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
pytest.importorskip("sqlalchemy")
pytest.importorskip("argon2")

ADMIN_PASSWORD = "admin-password-123"
DOCTOR_PASSWORD = "doctor-password-123"


def make_checkpoint(directory: Path, *, synthetic: bool = True, threshold: float = 0.5) -> Path:
    """A small untrained resnet18 checkpoint at 64 px (fast to build and to run)."""
    import torch

    from fracturescan.models import build_model
    from fracturescan.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet18", weights="none")
    return save_checkpoint(directory, model, {
        "input_size": 64, "synthetic": synthetic, "threshold": threshold,
        "threshold_method": "test value", "body_parts": ["XR_WRIST"],
    })


def as_wrist_dicom(source: Path) -> bytes:
    """A DICOM file's bytes with BodyPartExamined set to WRIST: the test models cover wrists,
    and routing refuses a study whose DICOM names a part no model covers (the samples are a
    hand, a hip and a tibia)."""
    import pydicom

    ds = pydicom.dcmread(source)
    ds.BodyPartExamined = "WRIST"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_bytes(seed: int = 0, size: tuple[int, int] = (80, 64)) -> bytes:
    """A random grayscale PNG."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with two run directories (``run_a/best`` and ``run_b``)."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    make_checkpoint(root / "run_a" / "best", synthetic=True, threshold=0.5)
    make_checkpoint(root / "run_b", synthetic=False, threshold=0.3)
    (root / "not_a_run").mkdir()
    return root


@pytest.fixture
def app_env(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of a fresh app: its own SQLite file, the models folder, a known admin."""
    from fracturescan.appconfig import ENV_DB_URL, ENV_MODELS_DIR

    env = {ENV_DB_URL: f"sqlite:///{tmp_path / 'app.db'}", ENV_MODELS_DIR: str(models_dir),
           "FRACTURESCAN_ADMIN_PASSWORD": ADMIN_PASSWORD}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def engine(app_env: dict[str, str]):
    """The app's engine with the admin and one doctor (``drsmith``)."""
    from fracturescan.store import users
    from fracturescan.store.db import make_engine

    engine = make_engine(app_env["FRACTURESCAN_DB_URL"])
    users.ensure_admin(engine, ADMIN_PASSWORD)
    users.create_user(engine, "drsmith", DOCTOR_PASSWORD, "doctor", actor="test")
    return engine


@pytest.fixture
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id at its lowest cost, for tests that check dozens of passwords (0.35 s each at
    the production cost on the 2-core dev machine); that cost is tested in test_hardening."""
    from argon2 import PasswordHasher

    from fracturescan.store import users

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(users, "_hasher", cheap)
    monkeypatch.setattr(users, "_DUMMY_HASH", cheap.hash("not-a-real-password-only-for-timing"))


@pytest.fixture(autouse=True)
def _restore_package_logger():
    """AppTest runs the app inside the test process, and the app sends the ``fracturescan`` log
    to stderr at INFO (right for a server). Undo that after each test, so a later CLI test sees
    the CLI's own logging choice (one error line), whatever order the tests run in."""
    import logging

    logger = logging.getLogger("fracturescan")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
