"""Streamlit's upload route (``PUT /_stcore/upload_file/<session id>/<file id>``) stores files
only for sessions with a logged-in user.

Streamlit accepts an upload for any connected session, and keeps it in memory until that
session's script reruns or the session ends: an anonymous visitor could open the login page
and fill the server's memory with files no widget ever asked for. The app tells this module
which sessions are logged in (on every run, and at logout); the route's file manager refuses
the rest with 403 before storing anything.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_logged_in: set[str] = set()


def allow(session_id: str) -> None:
    """Let ``session_id`` upload files (its user is logged in)."""
    with _lock:
        _logged_in.add(session_id)


def forbid(session_id: str) -> None:
    """Stop ``session_id`` from uploading (logged out, expired or never logged in)."""
    with _lock:
        _logged_in.discard(session_id)


def may_upload(session_id: str) -> bool:
    """True while ``session_id`` belongs to a logged-in user."""
    with _lock:
        return session_id in _logged_in


def install(manager: Any) -> None:
    """Wrap ``manager.add_file`` (Streamlit's uploaded-file manager) once."""
    if getattr(manager, "_fracturescan_guarded", False):
        return
    original = manager.add_file

    def add_file(session_id: str, file: Any) -> None:
        if not may_upload(session_id):
            from starlette.exceptions import HTTPException

            log.warning("refused an upload of %d bytes to a session without a logged-in user",
                        len(getattr(file, "data", b"")))
            raise HTTPException(status_code=403, detail="Log in before uploading files.")
        original(session_id, file)

    manager.add_file = add_file
    manager._fracturescan_guarded = True


def install_in_runtime() -> None:
    """:func:`install` on the running Streamlit server's file manager (no-op without one)."""
    from streamlit import runtime

    if runtime.exists():
        install(runtime.get_instance().uploaded_file_mgr)
