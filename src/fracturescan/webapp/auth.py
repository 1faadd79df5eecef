"""Login, session expiry and the forced password change, on top of :mod:`fracturescan.store`.

The session keeps no role and trusts no user id it cannot verify: it holds a record (user id,
session version, login and last-seen times) sealed with an HMAC under a key that exists only
in the server process. Whoever edits ``st.session_state`` (a bug, an extension, a crafted
widget value) cannot turn it into someone else's session; the role and the account's state are
re-read from the database on every run.

The record is also bound to the browser that logged in: a hash of its XSRF cookie (which
Streamlit sets per browser and checks on uploads) is sealed in with it. A Streamlit session id
travels in upload URLs, so it reaches proxy logs; a second browser that connects with it resumes
the session's state, but not its cookie, and is logged out on its first run.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from fracturescan.appconfig import AppConfig
from fracturescan.errors import FracturescanError
from fracturescan.store import users
from fracturescan.store.audit import log_event
from fracturescan.store.db import utcnow
from fracturescan.store.users import UserInfo

from . import upload_guard

log = logging.getLogger(__name__)

_SESSION, _NOTICE = "auth_session", "auth_notice"
#: Per-process secret: a server restart ends every session, which is what Streamlit does anyway.
_SEAL_KEY = secrets.token_bytes(32)


#: Streamlit's per-browser XSRF cookie (``server.enableXsrfProtection``, on by default).
XSRF_COOKIE = "_streamlit_xsrf"


def client_binding() -> str:
    """A hash of this browser's XSRF token ("" when there is none, as in AppTest)."""
    cookie = st.context.cookies.get(XSRF_COOKIE)
    if not isinstance(cookie, str) or not cookie:
        return ""
    token = cookie.encode()
    try:  # the cookie is re-masked on each page load; the token inside it stays the same
        from streamlit.web.server.starlette.starlette_app_utils import (
            decode_xsrf_token_string,
        )

        token = decode_xsrf_token_string(cookie)[0] or token
    except Exception as exc:  # noqa: BLE001  (another Streamlit version: bind to the cookie as sent)
        log.debug("XSRF cookie not decoded (%s); binding the session to it as sent", type(exc).__name__)
    return hashlib.sha256(token).hexdigest()


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def _mac(user_id: int, version: int, login_at: datetime, last_seen: datetime, client: str) -> str:
    message = f"{user_id}|{version}|{login_at.isoformat()}|{last_seen.isoformat()}|{client}".encode()
    return hmac.new(_SEAL_KEY, message, hashlib.sha256).hexdigest()


def _seal(user_id: int, version: int, login_at: datetime, last_seen: datetime) -> None:
    """Store the (signed) session record of ``user_id``, bound to this browser."""
    client = client_binding()
    st.session_state[_SESSION] = {"user_id": user_id, "session_version": version,
                                  "login_at": login_at, "last_seen": last_seen, "client": client,
                                  "mac": _mac(user_id, version, login_at, last_seen, client)}


def _unseal(record: Any) -> dict[str, Any] | None:
    """The session record if its seal is intact, else None (edited, forged or malformed)."""
    try:
        expected = _mac(int(record["user_id"]), int(record["session_version"]),
                        record["login_at"], record["last_seen"], str(record["client"]))
        return record if hmac.compare_digest(expected, str(record["mac"])) else None
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def logout(notice: str | None = None) -> None:
    """Forget the logged-in user (and everything of theirs kept in the session)."""
    session_id = _session_id()
    if session_id:
        upload_guard.forbid(session_id)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if notice:
        st.session_state[_NOTICE] = notice


def _expired(config: AppConfig, record: dict[str, Any], now: datetime) -> str | None:
    """The reason the current session has expired, or None."""
    if now - record["last_seen"] > timedelta(minutes=config.idle_minutes):
        return "Your session expired after inactivity; please log in again."
    if now - record["login_at"] > timedelta(hours=config.max_hours):
        return "Your session reached its maximum length; please log in again."
    return None


def current_user(engine: Engine, config: AppConfig) -> UserInfo | None:
    """The logged-in user, re-checked against the database on every run (every action).

    A user disabled, demoted, given a new password or deleted since login is logged out here,
    as is a session idle or open for too long, or one whose record was tampered with.
    """
    stored = st.session_state.get(_SESSION)
    if stored is None:
        return None
    record = _unseal(stored)
    if record is None:
        log_event(engine, "unknown", "session_tampered", "session record failed verification")
        logout("Your session could not be verified; please log in again.")
        return None
    if not hmac.compare_digest(str(record["client"]), client_binding()):
        log_event(engine, f"user #{record['user_id']}", "session_other_browser",
                  "a session was resumed from another browser and ended")
        logout("Your session was resumed from another browser and has been ended; please log in again.")
        return None
    now = utcnow()
    fresh = users.get_user(engine, record["user_id"])
    reason = _expired(config, record, now)
    if fresh is None or not fresh.active:
        reason = "Your account has been disabled; ask an administrator."
    elif fresh.session_version != record["session_version"]:
        reason = "Your account was changed by an administrator; please log in again."
    if reason:
        log_event(engine, fresh.username if fresh else f"user #{record['user_id']}",
                  "session_ended", reason)
        logout(reason)
        return None
    _seal(fresh.id, fresh.session_version, record["login_at"], now)
    session_id = _session_id()
    if session_id:
        upload_guard.allow(session_id)
    return fresh


def idle_watch(config: AppConfig) -> None:
    """Re-check the session on a timer, so results do not stay on an unattended screen.

    A fragment that reruns on its own every few seconds (without a click, and without counting
    as activity): once the idle or maximum time has passed it reruns the whole app, which logs
    out and shows the login page in place of the results.
    """
    every = max(5.0, min(60.0, config.idle_minutes * 60 / 4))

    @st.fragment(run_every=every)
    def _check() -> None:
        record = _unseal(st.session_state.get(_SESSION))
        if record is None or _expired(config, record, utcnow()):
            st.rerun(scope="app")

    _check()


def client_address(config: AppConfig) -> str:
    """The browser's address, for throttling failed logins per client."""
    forwarded = st.context.headers.get("X-Forwarded-For") if config.trust_proxy else None
    if isinstance(forwarded, str) and forwarded:
        return forwarded.split(",")[-1].strip()
    address = st.context.ip_address
    return address if isinstance(address, str) and address else "unknown"  # none in AppTest


def login_form(engine: Engine, config: AppConfig) -> None:
    """The login page: the only thing an anonymous visitor sees."""
    st.title("fracturescan")
    st.caption("Decision support for musculoskeletal radiographs. Sign in to continue.")
    notice = st.session_state.pop(_NOTICE, None)
    if notice:
        st.warning(notice)
    _first_start_hint(engine)
    with st.form("login"):
        username = st.text_input("User name", key="login_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary", width="stretch")
    if not submitted:
        return
    try:
        user = users.authenticate(engine, username, password, client=client_address(config))
    except users.AuthenticationError as exc:
        st.error(str(exc))
        return
    now = utcnow()
    _seal(user.id, user.session_version, now, now)
    st.rerun()


def _first_start_hint(engine: Engine) -> None:
    """Until someone has logged in, say where the first administrator's password is."""
    if users.anyone_logged_in(engine):
        return
    if users.has_users(engine):
        st.info("**First start:** sign in as `admin` with the one-time password printed in the terminal "
                "where `fracturescan app` was started; you then choose your own. Lost it? On the server, "
                "`fracturescan user reset-password admin` prints a new one.")
    else:
        st.info("**First start:** no account exists yet. On the server, run `fracturescan user "
                "create-admin` (with the same `--db`): it prints the administrator's one-time password.")


def change_password_form(engine: Engine, user: UserInfo, config: AppConfig, *, forced: bool) -> None:
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
        users.authenticate(engine, user.username, current, client=client_address(config))
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
    record = _unseal(st.session_state.get(_SESSION)) or {}
    now = utcnow()
    _seal(user.id, fresh.session_version if fresh else -1, record.get("login_at", now), now)
    st.success("Password changed.")
    if forced:
        st.rerun()
