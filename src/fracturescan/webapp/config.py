"""Web app configuration, read from environment variables (set by ``fracturescan app``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DB_URL = "FRACTURESCAN_DB_URL"
ENV_MODELS_DIR = "FRACTURESCAN_MODELS_DIR"
ENV_MODEL_PATHS = "FRACTURESCAN_MODEL_PATHS"
ENV_IDLE_MINUTES = "FRACTURESCAN_SESSION_IDLE_MINUTES"
ENV_MAX_HOURS = "FRACTURESCAN_SESSION_MAX_HOURS"
DEFAULT_DB_URL = "sqlite:///fracturescan-app.db"


@dataclass(frozen=True)
class AppConfig:
    """Where the database and models are, and how long a login lasts."""

    db_url: str = DEFAULT_DB_URL
    models_dir: Path | None = None
    model_paths: tuple[Path, ...] = ()
    idle_minutes: float = 30.0
    max_hours: float = 12.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "AppConfig":
        """Build from ``FRACTURESCAN_*`` variables (``os.environ`` by default)."""
        env = dict(os.environ if env is None else env)
        paths = tuple(Path(p) for p in env.get(ENV_MODEL_PATHS, "").split(os.pathsep) if p)
        models_dir = env.get(ENV_MODELS_DIR)
        return cls(
            db_url=env.get(ENV_DB_URL) or DEFAULT_DB_URL,
            models_dir=Path(models_dir) if models_dir else None,
            model_paths=paths,
            idle_minutes=float(env.get(ENV_IDLE_MINUTES, 30)),
            max_hours=float(env.get(ENV_MAX_HOURS, 12)),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce this configuration in a child process."""
        env = {ENV_DB_URL: self.db_url, ENV_IDLE_MINUTES: str(self.idle_minutes),
               ENV_MAX_HOURS: str(self.max_hours),
               ENV_MODEL_PATHS: os.pathsep.join(str(p) for p in self.model_paths)}
        if self.models_dir is not None:
            env[ENV_MODELS_DIR] = str(self.models_dir)
        return env
