"""What the web app holds once per process: database engines and loaded models.

Deliberately not ``st.cache_resource``: any browser, logged in or not, can send Streamlit's
"clear cache" message, which empties every ``st.cache_resource`` of the process. Held here, a
visitor cannot make the server reload a model (minutes of work on a CPU, and memory for each
copy still referenced) or rebuild the engine; only this module decides what is kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import Engine

from fracturescan.service import on_model_thread
from fracturescan.store import users

#: Loaded models kept at once (the active one and the one before it, while an admin switches).
MAX_PREDICTORS = 2

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_predictors: OrderedDict[tuple[str, str], Any] = OrderedDict()


def engine_for(db_url: str) -> Engine:
    """One engine per database URL for the life of the process (tables created on first use)."""
    with _lock:
        if db_url not in _engines:
            _engines[db_url] = users.open_store(db_url)
        return _engines[db_url]


def predictor_for(path: str, sha256: str) -> Any:
    """The loaded Predictor of the checkpoint at ``path`` with weights ``sha256``.

    Loaded on the model thread (:func:`~fracturescan.service.on_model_thread`); at most
    :data:`MAX_PREDICTORS` stay loaded, least recently used dropped first.
    """
    key = (path, sha256)
    with _lock:
        if key in _predictors:
            _predictors.move_to_end(key)
            return _predictors[key]
    from fracturescan.inference import Predictor

    loaded = on_model_thread(Predictor.from_checkpoint, path)  # outside the lock: loading is slow
    with _lock:
        loaded = _predictors.setdefault(key, loaded)  # two sessions loading at once keep one copy
        _predictors.move_to_end(key)
        while len(_predictors) > MAX_PREDICTORS:
            _predictors.popitem(last=False)
        return loaded
