"""Deployment configuration shared by the web app and the REST API (database, models, sessions,
upload limits), read from environment variables set by `fracturescan app` / `fracturescan serve`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from fracturescan.errors import ConfigError

ENV_DB_URL = "FRACTURESCAN_DB_URL"
ENV_MODELS_DIR = "FRACTURESCAN_MODELS_DIR"
ENV_MODEL_PATHS = "FRACTURESCAN_MODEL_PATHS"
ENV_IDLE_MINUTES = "FRACTURESCAN_SESSION_IDLE_MINUTES"
ENV_MAX_HOURS = "FRACTURESCAN_SESSION_MAX_HOURS"
ENV_MAX_UPLOAD_MB = "FRACTURESCAN_MAX_UPLOAD_MB"
ENV_TRUST_PROXY = "FRACTURESCAN_TRUST_PROXY"
DEFAULT_DB_URL = "sqlite:///fracturescan-app.db"


@dataclass(frozen=True)
class AppConfig:
    """Where the database and models are, how long a login lasts, how big an upload may be."""

    db_url: str = DEFAULT_DB_URL
    models_dir: Path | None = None
    model_paths: tuple[Path, ...] = ()
    idle_minutes: float = 30.0
    max_hours: float = 12.0
    #: Largest accepted upload, per file, in MB (10**6 bytes); checked before decoding.
    max_upload_mb: float = 50.0
    #: Behind a reverse proxy, every connection comes from the proxy: take the client's address
    #: from the last X-Forwarded-For entry (the one the proxy appended) for login throttling.
    #: Only set this when a proxy is in front, or a client could pick its own address.
    trust_proxy: bool = False

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ConfigError(f"The upload limit must be a positive number of MB, not {self.max_upload_mb}.")

    @property
    def max_upload_bytes(self) -> int:
        """The per-file upload limit in bytes."""
        return int(self.max_upload_mb * 1_000_000)

    @property
    def streamlit_max_upload_mb(self) -> int:
        """Streamlit's ``server.maxUploadSize`` (whole MB, at least 1) covering the limit.

        Streamlit counts MiB (2**20 bytes), so rounding up always admits every file the app's
        own, exact check (:func:`~fracturescan.service.check_upload_size`) accepts.
        """
        return max(1, math.ceil(self.max_upload_mb))

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
            max_upload_mb=_float_env(env, ENV_MAX_UPLOAD_MB, 50.0),
            trust_proxy=env.get(ENV_TRUST_PROXY, "").lower() in ("1", "true", "yes"),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce this configuration in a child process."""
        env = {ENV_DB_URL: self.db_url, ENV_IDLE_MINUTES: str(self.idle_minutes),
               ENV_MAX_HOURS: str(self.max_hours), ENV_MAX_UPLOAD_MB: str(self.max_upload_mb),
               ENV_MODEL_PATHS: os.pathsep.join(str(p) for p in self.model_paths),
               ENV_TRUST_PROXY: "1" if self.trust_proxy else ""}
        if self.models_dir is not None:
            env[ENV_MODELS_DIR] = str(self.models_dir)
        return env


def _float_env(env: dict[str, str], key: str, default: float) -> float:
    """``env[key]`` as a float, with an error naming the variable when it is not a number."""
    raw = env.get(key)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number; give a size in MB such as 50.") from None
