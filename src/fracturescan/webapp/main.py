"""The Streamlit app: configuration, cached resources, login gate and role-checked routing.

Pages are chosen with the ``page`` query parameter (``?page=users``) so each has its own URL;
every run re-checks the user's role against the page, so typing an admin URL as a doctor shows
a refusal, never the page.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable

import streamlit as st
from sqlalchemy import Engine

from fracturescan.store import settings
from fracturescan.store.audit import log_event
from fracturescan.store.users import UserInfo

from fracturescan.appconfig import AppConfig
from fracturescan.errors import CheckpointError
from fracturescan.inference import Predictor
from fracturescan.service import ModelChoice, active_model, active_threshold, discover_models

from . import admin, apikeys_page, auth, doctor, monitoring_page, upload_guard
from .resources import engine_for, predictor_for

log = logging.getLogger("fracturescan.webapp")


@dataclass(frozen=True)
class Page:
    """A routable page: its title and which roles may open it."""

    title: str
    roles: frozenset[str]


PAGES: dict[str, Page] = {
    "analyse": Page("Analyse", frozenset({"doctor", "admin"})),
    "account": Page("My account", frozenset({"doctor", "admin"})),
    "users": Page("Users", frozenset({"admin"})),
    "keys": Page("API keys", frozenset({"admin"})),
    "models": Page("Model & settings", frozenset({"admin"})),
    "audit": Page("Audit log", frozenset({"admin"})),
    "monitoring": Page("Monitoring", frozenset({"admin"})),
}
ADMIN_PAGES = tuple(k for k, p in PAGES.items() if "doctor" not in p.roles)


def _configure_logging() -> None:
    """Send fracturescan's log (e.g. the one-time admin password) to the server's stderr."""
    root = logging.getLogger("fracturescan")
    if not any(getattr(h, "_fracturescan", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._fracturescan = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        if root.level == logging.NOTSET:  # keep a level someone chose (e.g. DEBUG) as it is
            root.setLevel(logging.INFO)


def _navigation(user: UserInfo, current: str) -> None:
    with st.sidebar:
        st.markdown(f"Signed in as **{user.username}** ({user.role})")
        for key, page in PAGES.items():
            if user.role in page.roles:
                if st.button(page.title, key=f"nav_{key}", width="stretch",
                             type="primary" if key == current else "secondary"):
                    st.query_params["page"] = key
                    st.rerun()
        if st.button("Log out", key="logout", width="stretch"):
            auth.logout("You have been logged out.")
            st.query_params.clear()
            st.rerun()


def _render_page(key: str, engine: Engine, user: UserInfo, config: AppConfig) -> None:
    models = discover_models(config.models_dir, config.model_paths)
    choice = active_model(engine, models)
    renderers: dict[str, Callable[[], None]] = {
        "account": lambda: auth.change_password_form(engine, user, config, forced=False),
        "users": lambda: admin.render_users(engine, user),
        "keys": lambda: apikeys_page.render_api_keys(engine, user),
        "models": lambda: admin.render_models(engine, user, models, choice),
        "audit": lambda: admin.render_audit(engine, user),
        "monitoring": lambda: monitoring_page.render_monitoring(engine, choice),
    }
    if key in renderers:
        if key == "account":
            st.header("My account")
        renderers[key]()
        return
    predictor = _loaded(choice) if choice is not None else None
    doctor.render(engine, user, choice, predictor,
                  active_threshold(engine, choice) if choice else 0.5,
                  bool(settings.get_setting(engine, settings.STORE_PIXELS, False)),
                  max_upload_mb=config.max_upload_mb, models=models,
                  load=lambda c: (_loaded(c), active_threshold(engine, c)))


def _loaded(choice: ModelChoice) -> Predictor:
    """The loaded model; if its files fail verification, one line for the user (the reason, which
    names server paths, goes to the log and the admin's model page) and the run stops there."""
    try:
        with st.spinner("Loading the model…"):
            return predictor_for(str(choice.path), choice.metadata.sha256)
    except CheckpointError as exc:
        log.error("model %s could not be loaded: %s", choice.model_id, exc)
        st.error(f"The model {doctor.plain(choice.model_id)} could not be loaded (its files fail verification). "
                 "An administrator sees why on the Model & settings page and can choose another model.")
        st.stop()
        raise  # not reached: st.stop() ends the run


def run(config: AppConfig | None = None) -> None:
    """Entry point called by the Streamlit script on every rerun."""
    _configure_logging()
    st.set_page_config(page_title="fracturescan", page_icon="🦴", layout="centered")
    config = config or AppConfig.from_env()
    upload_guard.install_in_runtime()  # uploads only into logged-in sessions
    engine = engine_for(config.db_url)
    user = auth.current_user(engine, config)
    if user is None:
        auth.login_form(engine, config)
        return
    auth.idle_watch(config)
    if user.must_change_password:
        st.title("Choose a password")
        auth.change_password_form(engine, user, config, forced=True)
        return
    key = st.query_params.get("page", "analyse")
    if key != "keys":
        apikeys_page.forget_new_key()  # a new API key is shown only until the admin leaves
    _navigation(user, key)
    page = PAGES.get(key)
    if page is None or user.role not in page.roles:
        log_event(engine, user.username, "access_denied", f"page={key[:40]}")
        st.error("You do not have access to this page.")
        return
    _render_page(key, engine, user, config)
