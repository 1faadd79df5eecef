"""Fixtures for the REST API tests: a database with a doctor and a key, a TestClient factory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx2")
pytest.importorskip("multipart")
pytest.importorskip("sqlalchemy")
pytest.importorskip("argon2")

from tests.webapp.conftest import make_checkpoint, png_bytes  # noqa: E402,F401

ADMIN_PASSWORD = "admin-password-123"
DOCTOR_PASSWORD = "doctor-password-123"


@pytest.fixture(scope="session")
def api_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 checkpoint at 64 px, marked synthetic, threshold 0.5."""
    import torch

    torch.set_num_threads(1)
    return make_checkpoint(tmp_path_factory.mktemp("api_models") / "run" / "best", synthetic=True)


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite database; the first admin gets a known password (no one-time password)."""
    monkeypatch.setenv("FRACTURESCAN_ADMIN_PASSWORD", ADMIN_PASSWORD)
    return f"sqlite:///{tmp_path / 'api.db'}"


@pytest.fixture
def engine(db_url: str):
    """The database with the admin and one doctor, ``drsmith``."""
    from fracturescan.store import users

    engine = users.open_store(db_url)
    users.create_user(engine, "drsmith", DOCTOR_PASSWORD, "doctor", actor="test")
    return engine


@pytest.fixture
def doctor_key(engine) -> str:
    """A valid API key of drsmith."""
    from fracturescan.store.apikeys import create_key

    return create_key(engine, "drsmith", "tests", actor="test")[1]


@pytest.fixture
def make_client(db_url: str, engine) -> Callable[..., object]:
    """``make_client(model_paths=..., max_upload_mb=...)`` -> a started TestClient."""
    from fastapi.testclient import TestClient

    from fracturescan.api.app import create_app
    from fracturescan.appconfig import AppConfig

    clients = []

    def make(model_paths: tuple[Path, ...] = (), **options: object) -> TestClient:
        client = TestClient(create_app(AppConfig(db_url=db_url, model_paths=tuple(model_paths), **options)),
                            raise_server_exceptions=False)
        clients.append(client.__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)
