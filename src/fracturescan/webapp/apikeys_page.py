"""Admin page: create, list and revoke the REST API's keys (what ``fracturescan api-key`` does).

A new key is shown once. It lives in ``st.session_state`` (server-side, this browser session
only) until the admin presses "Done, I stored it" or opens another page, and it is never logged
or written to the database: :func:`fracturescan.store.apikeys.create_key` stores its SHA-256
and records only its first characters in the events table.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine

from fracturescan.store import apikeys, users
from fracturescan.store.apikeys import ApiKeyInfo
from fracturescan.store.db import format_utc
from fracturescan.store.users import UserAdminError, UserInfo

#: Session-state entries of this page (the pending key, and a notice to show after a rerun).
_NEW_KEY, _NOTICE = "apikeys_new_key", "apikeys_notice"
USAGE = ("Clients send a key in the header `Authorization: Bearer <key>` to the REST API "
         "started with `fracturescan serve` (endpoints documented at `/docs` on that server); "
         "each request acts as the key's user.")


def forget_new_key() -> None:
    """Drop a just-created key from the session (called when the admin leaves the page)."""
    st.session_state.pop(_NEW_KEY, None)


def _label(key: ApiKeyInfo) -> str:
    """Id and name first: a phone cuts long choices short on the right."""
    return f"#{key.id} {key.name} ({key.username}, {key.prefix}…)"


def _rows(keys: list[ApiKeyInfo]) -> list[dict[str, object]]:
    """Keys as table rows, what an admin scans for first on the left (a phone shows only
    those); the first characters only, never the key."""
    return [{"id": k.id, "status": k.status(), "user": k.username,
             "name": k.name, "last used (UTC)": format_utc(k.last_used_at, "never"),
             "expires (UTC)": format_utc(k.expires_at, "never"),
             "key": k.prefix + "…", "created (UTC)": format_utc(k.created_at, "—"),
             "revoked (UTC)": format_utc(k.revoked_at, "—")} for k in keys]


#: Narrow id and status columns and a bounded name, so more columns fit the centred page.
_COLUMNS = {"id": st.column_config.NumberColumn(width="small"),
            "status": st.column_config.TextColumn(width="small"),
            "name": st.column_config.TextColumn(width="medium")}


def _show_new_key(pending: dict[str, object]) -> None:
    """The key just created, once, with the warning and the button that hides it for good."""
    st.success(f"Created API key #{pending['id']} “{pending['name']}” for {pending['username']} "
               f"(expires: {pending['expires']}).")
    st.warning("Copy this key now and keep it in the client's secret store: it will **not be "
               "shown again**. Only a hash of it is kept, so a lost key cannot be recovered; "
               "revoke it and create a new one instead.")
    st.code(str(pending["key"]), language=None, wrap_lines=True)
    if st.button("Done, I stored it", type="primary", key="apikey_done"):
        forget_new_key()
        st.rerun()


def _create_form(engine: Engine, admin: UserInfo) -> None:
    """Choose an active user and a name; on success keep the key for :func:`_show_new_key`."""
    active = [str(u["username"]) for u in users.list_users(engine) if u["active"]]
    with st.form("create_api_key"):
        st.markdown("**New key**")
        owner = st.selectbox("User the key acts as", active, index=None,
                             placeholder="Choose a user", key="apikey_user")
        name = st.text_input("Name (what the key is for, e.g. “PACS bridge”)", max_chars=64,
                             key="apikey_name")
        days = st.number_input("Valid for (days; 0 = no expiry)", min_value=0,
                               max_value=apikeys.MAX_EXPIRY_DAYS, value=apikeys.DEFAULT_EXPIRY_DAYS, step=30,
                               key="apikey_days")
        submitted = st.form_submit_button("Create key", type="primary")
    if not submitted:
        return
    if owner is None:
        st.error("Choose the user the new key will act as.")
        return
    try:
        info, key = apikeys.create_key(engine, owner, name, actor=admin.username, expires_days=days)
    except UserAdminError as exc:
        st.error(str(exc))
        return
    st.session_state[_NEW_KEY] = {"admin_id": admin.id, "id": info.id, "username": info.username,
                                  "name": info.name, "key": key,
                                  "expires": format_utc(info.expires_at, "never") + (" UTC" if info.expires_at else "")}
    del st.session_state["apikey_name"]  # an empty name field for the next key
    st.rerun()


def _revoke_form(engine: Engine, admin: UserInfo, keys: list[ApiKeyInfo]) -> None:
    """Revoke one active key, after an explicit confirmation."""
    live = {k.id: k for k in keys if k.revoked_at is None}  # expired keys too: revoking is explicit
    if not live:
        st.caption("No active key to revoke.")
        return
    with st.form("revoke_api_key", clear_on_submit=True):
        st.markdown("**Revoke a key**")
        key_id = st.selectbox("Key", list(live), index=None, placeholder="Choose a key",
                              format_func=lambda i: _label(live[i]), key="apikey_revoke_id")
        confirmed = st.checkbox("I understand that clients using this key are refused from now on",
                                key="apikey_revoke_confirm")
        submitted = st.form_submit_button("Revoke key")
    if not submitted:
        return
    if key_id is None:
        st.error("Choose the key to revoke.")
        return
    if not confirmed:
        st.error(f"Key #{key_id} was not revoked: tick the confirmation box, then press "
                 "“Revoke key” again.")
        return
    try:
        info = apikeys.revoke_key(engine, key_id, actor=admin.username)
    except UserAdminError as exc:
        st.error(str(exc))
        return
    st.session_state[_NOTICE] = (f"Revoked API key #{info.id} “{info.name}” of {info.username}; "
                                 "requests with it are refused from now on.")
    st.rerun()


def render_api_keys(engine: Engine, user: UserInfo) -> None:
    """The "API keys" admin page: a new key (shown once), every key's record, revocation."""
    st.header("API keys")
    st.caption(USAGE)
    notice = st.session_state.pop(_NOTICE, None)
    if notice:
        st.success(notice)
    pending = st.session_state.get(_NEW_KEY)
    if pending is not None and pending.get("admin_id") != user.id:
        forget_new_key()  # never show one admin's key to another (the session was reused)
        pending = None
    if pending is not None:
        _show_new_key(pending)
        st.info("Press “Done, I stored it” before creating another key.")
    else:
        _create_form(engine, user)
    keys = apikeys.list_keys(engine)
    st.markdown("**All keys**")
    if keys:
        st.dataframe(_rows(keys), hide_index=True, width="stretch", column_config=_COLUMNS)
    else:
        st.caption("No API keys yet.")
    _revoke_form(engine, user, keys)
