"""Login, session expiry and the forced password change, on top of :mod:`fracturescan.store`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import streamlit as st
from sqlalchemy import Engine

from fracturescan.errors import FracturescanError
from fracturescan.store import users
from fracturescan.store.audit import log_event
from fracturescan.store.db import utcnow
from fracturescan.store.users import UserInfo

from .config import AppConfig

log = logging.getLogger(__name__)

_USER, _LOGIN_AT, _LAST_SEEN, _NOTICE = "auth_user", "auth_login_at", "auth_last_seen", "auth_notice"


def logout(notice: str | None = None) -> None:
    """Forget the logged-in user (and everything of theirs kept in the session)."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if notice:
        st.session_state[_NOTICE] = notice


def _expired(config: AppConfig, now: datetime) -> str | None:
    """The reason the current session has expired, or None."""
    if now - st.session_state[_LAST_SEEN] > timedelta(minutes=config.idle_minutes):
        return "Your session expired after inactivity; please log in again."
    if now - st.session_state[_LOGIN_AT] > timedelta(hours=config.max_hours):
        return "Your session reached its maximum length; please log in again."
    return None


def current_user(engine: Engine, config: AppConfig) -> UserInfo | None:
    """The logged-in user, re-checked against the database on every run (every action).

    A user disabled, demoted, given a new password or deleted since login is logged out here,
    as is a session idle or open for too long.
    """
    session_user: UserInfo | None = st.session_state.get(_USER)
    if session_user is None:
        return None
    now = utcnow()
    fresh = users.get_user(engine, session_user.id)
    reason = _expired(config, now)
    if fresh is None or not fresh.active:
        reason = "Your account has been disabled; ask an administrator."
    elif fresh.session_version != session_user.session_version:
        reason = "Your account was changed by an administrator; please log in again."
    if reason:
        log_event(engine, session_user.username, "session_ended", reason)
        logout(reason)
        return None
    st.session_state[_LAST_SEEN] = now
    st.session_state[_USER] = fresh
    return fresh


def login_form(engine: Engine) -> None:
    """The login page: the only thing an anonymous visitor sees."""
    st.title("fracturescan")
    st.caption("Decision support for musculoskeletal radiographs. Sign in to continue.")
    notice = st.session_state.pop(_NOTICE, None)
    if notice:
        st.warning(notice)
    with st.form("login"):
        username = st.text_input("User name", key="login_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary", width="stretch")
    if not submitted:
        return
    try:
        user = users.authenticate(engine, username, password)
    except users.AuthenticationError as exc:
        st.error(str(exc))
        return
    now = utcnow()
    st.session_state.update({_USER: user, _LOGIN_AT: now, _LAST_SEEN: now})
    st.rerun()


def change_password_form(engine: Engine, user: UserInfo, *, forced: bool) -> None:
    """Let ``user`` set a new password (forced after a reset or with a one-time password)."""
    if forced:
        st.warning("You are using a temporary password: choose your own before continuing.")
    with st.form("change_password", clear_on_submit=True):
        current = st.text_input("Current password", type="password")
        new = st.text_input(f"New password (at least {users.MIN_PASSWORD_LENGTH} characters)",
                            type="password")
        again = st.text_input("New password again", type="password")
        submitted = st.form_submit_button("Change password", type="primary")
    if not submitted:
        return
    try:
        users.authenticate(engine, user.username, current)
    except users.AuthenticationError:
        st.error("The current password is wrong.")
        return
    if new != again:
        st.error("The two new passwords differ; type them again.")
        return
    try:
        users.set_password(engine, user.username, new, actor=user.username)
    except FracturescanError as exc:
        st.error(str(exc))
        return
    # The change bumps the session version: adopt it so this session stays logged in.
    fresh = users.get_user(engine, user.id)
    st.session_state[_USER] = fresh
    st.success("Password changed.")
    if forced:
        st.rerun()
