"""The servers: ``fracturescan app`` (Streamlit), ``fracturescan serve`` (the REST API) and
``fracturescan api-key`` (the API's keys). Both servers share one database and model folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from ..errors import FracturescanError, MissingExtraError
from . import output
from .core import app, command
from .db_url import DB_OPTION, open_database, resolve_db_url, shown
from .users import announce_first_admin

keys = typer.Typer(help="Create, list and revoke REST API keys.", no_args_is_help=True)
app.add_typer(keys, name="api-key")

_DB = DB_OPTION
_MODELS = typer.Option(None, "--models", help="Folder of training runs (the admin picks the active one).")
_MODEL = typer.Option(None, "--model", help="A run or checkpoint directory (repeatable).")
_HOST = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for the network; put TLS in front).")
_MAX_UPLOAD = typer.Option(50.0, "--max-upload-mb", help="Largest file accepted, in MB.")


_store = open_database


def _deploy_config(models: Optional[Path], model: Optional[list[Path]], db: str, max_upload_mb: float):  # noqa: ANN202
    """The AppConfig both servers run with, after checking the model options."""
    from ..appconfig import AppConfig

    if models is None and not model:
        raise FracturescanError("Give --models DIR (a folder of training runs) or --model PATH.")
    if models is not None and not models.is_dir():
        raise FracturescanError(f"--models {models} is not a folder.")
    return AppConfig(db_url=resolve_db_url(db), models_dir=models, model_paths=tuple(model or ()), max_upload_mb=max_upload_mb)


@command("app")
def app_command(models: Optional[Path] = _MODELS, model: Optional[list[Path]] = _MODEL, db: str = _DB,
                host: str = _HOST, port: int = typer.Option(8501, help="Port to listen on."),
                max_upload_mb: float = _MAX_UPLOAD) -> None:
    """Start the clinical web app (Streamlit) with Doctor/Admin roles and an audit trail."""
    import os
    import subprocess
    import sys

    try:
        from ..webapp import APP_SCRIPT
        import streamlit  # noqa: F401  (only to fail early with a clear message)
    except ImportError as exc:
        raise MissingExtraError(exc.name or "streamlit", "app", "The web app") from exc
    from ..appconfig import ENV_TRUST_PROXY

    # Behind the reverse proxy (deploy/), login throttling needs the client's address from it.
    config = dataclasses.replace(_deploy_config(models, model, db, max_upload_mb),
                                 trust_proxy=os.environ.get(ENV_TRUST_PROXY, "").lower() in ("1", "true", "yes"))
    # Streamlit drops oversized uploads itself; the app checks the exact limit again.
    command_line = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
                    "--server.address", host, "--server.port", str(port),
                    "--server.maxUploadSize", str(config.streamlit_max_upload_mb),
                    "--server.headless", "true", "--browser.gatherUsageStats", "false",
                    "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
                    # The login is bound to the browser's XSRF cookie (webapp/auth.py): keep it on.
                    "--server.enableXsrfProtection", "true",
                    # An unexpected error shows no traceback (server paths) in the browser; it is logged.
                    "--client.showErrorDetails", "none"]
    typer.echo(f"fracturescan app on http://{host}:{port} (database {shown(config.db_url)})")
    # The database and the first admin exist before anyone opens the page; a one-time password
    # is printed here, on the terminal of whoever started the server, never logged.
    announce_first_admin(open_database(config.db_url))
    raise typer.Exit(subprocess.call(command_line, env={**os.environ, **config.to_env()}))


@command()
def serve(models: Optional[Path] = _MODELS, model: Optional[list[Path]] = _MODEL, db: str = _DB,
          host: str = _HOST, port: int = typer.Option(8000, help="Port to listen on."),
          max_upload_mb: float = _MAX_UPLOAD,
          workers: int = typer.Option(1, "--workers", min=1, max=64,
                                      help="Worker processes (each loads the model; share PostgreSQL).")) -> None:
    """Start the REST API (FastAPI): POST /v1/predict with an API key; docs at /docs."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: file uploads)
        import uvicorn
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "api", "The REST API") from exc
    from ..api.app import create_app

    config = _deploy_config(models, model, db, max_upload_mb)
    if workers > 1:
        _serve_workers(config, host, port, workers)
        return
    api = create_app(config, preload=True)
    typer.echo(f"fracturescan API on http://{host}:{port} (docs at /docs; database {shown(config.db_url)})")
    announce_first_admin(open_database(config.db_url))
    uvicorn.run(api, host=host, port=port, log_level="info")


def _serve_workers(config, host: str, port: int, workers: int) -> None:  # noqa: ANN001  (AppConfig)
    """Run ``workers`` API processes on one port (uvicorn restarts any that dies). Each builds its
    app from the environment; the schema is made once here first, so they do not race for it."""
    import os
    import shutil
    import tempfile

    import uvicorn

    from ..api.metrics import MULTIPROC_ENV

    _store(config.db_url).dispose()
    os.environ.update(config.to_env())
    # The workers' request metrics meet in this folder, so any worker's /metrics reports them all.
    metrics_dir = tempfile.mkdtemp(prefix="fracturescan-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    typer.echo(f"fracturescan API on http://{host}:{port} with {workers} workers "
               f"(database {shown(config.db_url)})")
    announce_first_admin(open_database(config.db_url))
    try:
        uvicorn.run("fracturescan.api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="info")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@command("create", group=keys)
def create_key(
    username: str = typer.Argument(..., help="The user the key acts as (created in the web app)."),
    name: str = typer.Option(..., "--name", help="What the key is for, e.g. 'PACS bridge'."),
    expires_days: float = typer.Option(365, "--expires-days", help="Days until the key stops working (0: never)."),
    db: str = _DB,
) -> None:
    """Create a key; it is printed once and only its SHA-256 is stored."""
    from ..store.apikeys import create_key as create

    info, key = create(_store(db), username, name, actor="cli", expires_days=expires_days)
    until = f"expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else "never expires"
    typer.echo(f"API key #{info.id} for {info.username} ({info.name}, {until}). "
               "Store it now; it is not shown again:")
    typer.echo(key)


@command("list", group=keys)
def list_keys(user: Optional[str] = typer.Option(None, "--user", help="Only this user's keys."),
              db: str = _DB) -> None:
    """List keys (id, owner, name, first characters, dates; never the key)."""
    from ..store.apikeys import list_keys as listing
    from ..store.db import format_utc as when

    rows = [(k.id, k.username, k.name, k.prefix + "…", k.status(), when(k.created_at), when(k.expires_at),
             when(k.last_used_at), when(k.revoked_at)) for k in listing(_store(db), user)]
    typer.echo(output.table(("id", "user", "name", "key", "status", "created (UTC)", "expires", "last used",
                             "revoked"), rows))


@command("revoke", group=keys)
def revoke_key(key_id: int = typer.Argument(..., help="The key's id (see `api-key list`)."),
               db: str = _DB) -> None:
    """Revoke a key at once."""
    from ..store.apikeys import revoke_key as revoke

    info = revoke(_store(db), key_id, actor="cli")
    typer.echo(f"Revoked API key #{info.id} ({info.username}: {info.name}).")
