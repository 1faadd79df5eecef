"""App settings kept in the database: active model (overall and per body part), per-model
thresholds, pixel storage."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .db import Event, Setting, utcnow

ACTIVE_MODEL = "active_model"
STORE_PIXELS = "store_pixels"


def part_model_key(body_part: str) -> str:
    """Setting key of the model the admin made active for one body part (``XR_ELBOW``, ...)."""
    return f"{ACTIVE_MODEL}:{body_part}"


def threshold_key(model_sha256: str) -> str:
    """Setting key of a model's threshold: tied to the exact weights, not the folder name."""
    return f"threshold:{model_sha256}"


def get_setting(engine: Engine, key: str, default: Any = None) -> Any:
    """A setting's value, or ``default`` when it was never set."""
    with Session(engine) as session:
        row = session.get(Setting, key)
        return default if row is None else json.loads(row.value)


def set_setting(engine: Engine, key: str, value: Any, *, actor: str) -> None:
    """Create or replace a setting, and log who changed it."""
    text = json.dumps(value)
    with Session(engine) as session, session.begin():
        row = session.get(Setting, key)
        if row is None:
            session.add(Setting(key=key, value=text, updated_at=utcnow(), updated_by=actor))
        else:
            row.value, row.updated_at, row.updated_by = text, utcnow(), actor
        session.add(Event(actor=actor, action="setting_changed", detail=f"{key} = {text}",
                          created_at=utcnow()))
