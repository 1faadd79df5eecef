"""Admin pages: users, active model and threshold, pixel storage, audit log and events."""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

import streamlit as st
from sqlalchemy import Engine

from fracturescan.errors import FracturescanError
from fracturescan.store import settings, users
from fracturescan.store.audit import audit_csv, audit_rows, events_csv, recent_events, spreadsheet_safe
from fracturescan.store.db import utcnow
from fracturescan.store.users import UserInfo

from fracturescan.service import ModelChoice


def _attempt(action: Callable[[], None], success: str) -> None:
    """Run an admin action; show its error message instead of crashing."""
    try:
        action()
    except FracturescanError as exc:
        st.error(str(exc))
    else:
        st.success(success)


def render_users(engine: Engine, admin: UserInfo) -> None:
    """Create users, disable/enable them, change roles, reset passwords."""
    st.header("Users")
    with st.form("create_user", clear_on_submit=True):
        st.markdown("**New user**")
        name = st.text_input("User name", key="new_username")
        role = st.selectbox("Role", users.ROLES, key="new_role")
        password = st.text_input(f"Temporary password (≥ {users.MIN_PASSWORD_LENGTH} characters)",
                                 type="password", key="new_password")
        if st.form_submit_button("Create user", type="primary"):
            _attempt(lambda: users.create_user(engine, name, password, role, actor=admin.username,
                                               must_change_password=True),
                     f"Created {name!r}; they must choose their own password at first login.")
    everyone = users.list_users(engine)
    names = [u["username"] for u in everyone]
    with st.form("manage_user"):
        st.markdown("**Change a user**")
        target = st.selectbox("User", names, key="manage_target")
        action = st.selectbox("Action", ["Disable", "Enable", "Make doctor", "Make admin",
                                         "Reset password", "Unlock (forget failed logins)"],
                              key="manage_action")
        new_password = st.text_input("New temporary password (for a reset)", type="password",
                                     key="manage_password")
        if st.form_submit_button("Apply") and target:
            _apply(engine, admin, target, action, new_password)
            everyone = users.list_users(engine)
    st.dataframe(everyone, hide_index=True, width="stretch")


def _apply(engine: Engine, admin: UserInfo, target: str, action: str, password: str) -> None:
    actor = admin.username
    actions: dict[str, Callable[[], None]] = {
        "Disable": lambda: users.set_active(engine, target, False, actor=actor),
        "Enable": lambda: users.set_active(engine, target, True, actor=actor),
        "Make doctor": lambda: users.set_role(engine, target, "doctor", actor=actor),
        "Make admin": lambda: users.set_role(engine, target, "admin", actor=actor),
        "Reset password": lambda: users.set_password(engine, target, password, actor=actor,
                                                     must_change=True),
        "Unlock (forget failed logins)": lambda: users.unlock(engine, target, actor=actor),
    }
    _attempt(actions[action], f"{action}: done for {target!r}.")


def render_models(engine: Engine, admin: UserInfo, models: list[ModelChoice],
                  active: ModelChoice | None) -> None:
    """Choose the active model, set its threshold, toggle storage of uploaded pixels."""
    st.header("Model and settings")
    if not models:
        st.error("No checkpoints found. Start the app with --models DIR (run directories) "
                 "or --model PATH.")
    else:
        st.dataframe([{"model": m.model_id, "architecture": m.metadata.arch,
                       "synthetic": m.metadata.synthetic, "created": m.metadata.created_at,
                       "checkpoint threshold": round(m.metadata.threshold, 4),
                       "threshold method": m.metadata.threshold_method,
                       "weights": "verified" if m.problem is None else "UNUSABLE"} for m in models],
                     hide_index=True, width="stretch")
        for m in models:
            if m.problem is not None:
                st.warning(f"**{m.model_id} cannot be used**: {m.problem} It is never chosen "
                           "automatically; activating it makes predictions fail until it is repaired.")
        ids = [m.model_id for m in models]
        with st.form("active_model"):
            chosen = st.selectbox("Active model", ids, index=ids.index(active.model_id) if active else 0)
            if st.form_submit_button("Activate", type="primary"):
                settings.set_setting(engine, settings.ACTIVE_MODEL, chosen, actor=admin.username)
                st.success(f"Active model: {chosen}.")
                st.rerun()
    if models:
        _part_models_form(engine, admin, models)
    if active is not None:
        _threshold_form(engine, admin, active)
    with st.form("pixels"):
        current = bool(settings.get_setting(engine, settings.STORE_PIXELS, False))
        keep = st.toggle("Store uploaded pixels in the database (decoded image only, never "
                         "DICOM tags)", value=current)
        if st.form_submit_button("Save"):
            settings.set_setting(engine, settings.STORE_PIXELS, keep, actor=admin.username)
            st.success("Saved.")


def _part_models_form(engine: Engine, admin: UserInfo, models: list[ModelChoice]) -> None:
    """Which model answers each body part; parts no model covers are listed as refused."""
    from fracturescan.routing import covered_parts, part_assignments

    st.markdown("**Active model per body part**")
    st.dataframe([{"body part": part, "model": choice.model_id if choice else
                   "none: no model covers this part, its studies are refused"}
                  for part, choice in part_assignments(engine, models).items()], hide_index=True, width="stretch")
    coverage = covered_parts(models)
    if not coverage:
        st.info("No model records the body parts it was trained on: every study goes to the active model.")
        return
    assigned = part_assignments(engine, models)
    with st.form("part_models"):
        picks = {}
        for part, eligible in coverage.items():
            ids = [m.model_id for m in eligible]
            current = assigned[part]
            picks[part] = st.selectbox(f"Model for {part}", ids, key=f"part_model_{part}",
                                       index=ids.index(current.model_id) if current else 0)
        if st.form_submit_button("Save body-part models"):
            for part, model_id in picks.items():
                if assigned[part] is None or assigned[part].model_id != model_id:  # type: ignore[union-attr]
                    settings.set_setting(engine, settings.part_model_key(part), model_id, actor=admin.username)
            st.success("Body-part models saved.")
            st.rerun()


def _threshold_form(engine: Engine, admin: UserInfo, active: ModelChoice) -> None:
    key = settings.threshold_key(active.metadata.sha256)
    stored = settings.get_setting(engine, key)
    current = float(stored) if stored is not None else active.metadata.threshold
    with st.form("threshold"):
        st.markdown(f"**Decision threshold of {active.model_id}** (checkpoint value "
                    f"{active.metadata.threshold:.4f}, {active.metadata.threshold_method})")
        value = st.number_input("Threshold", 0.0, 1.0, float(current), 0.01, format="%.4f")
        if st.form_submit_button("Save threshold"):
            settings.set_setting(engine, key, float(value), actor=admin.username)
            st.success(f"Threshold set to {value:.4f}.")


#: Columns a reviewer reads first; the identifiers (hashes, model version) follow.
_AUDIT_FIRST = ("study_id", "created_at_utc", "username", "study_probability", "study_abnormal",
                "threshold", "image_position", "image_probability", "image_abnormal", "feedback")


def render_audit(engine: Engine, admin: UserInfo) -> None:
    """Browse the audit log, filter it, export it as CSV; show security events."""
    st.header("Audit log")
    days = st.number_input("Last N days (0 = all)", 0, 3650, 30, key="audit_days")
    who = st.text_input("User name (empty = everyone)", key="audit_user")
    since = utcnow() - timedelta(days=days) if days else None
    rows = audit_rows(engine, since=since, username=who.strip() or None)
    st.caption(f"{len(rows)} image row(s); times are UTC.")
    st.download_button("Export CSV", audit_csv(rows), file_name="fracturescan-audit.csv",
                       mime="text/csv", disabled=not rows)
    # The table's own download button exports what it shows: escape formula-like text there too.
    shown = [{k: spreadsheet_safe(v) for k, v in row.items()} for row in rows]
    st.dataframe(shown, hide_index=True, width="stretch", column_order=_AUDIT_FIRST + tuple(
        c for c in (rows[0] if rows else {}) if c not in _AUDIT_FIRST))
    with st.expander("Security events (logins, refused logins, user and setting changes)"):
        events = recent_events(engine)
        st.download_button("Export events CSV", events_csv(events), file_name="fracturescan-events.csv",
                           mime="text/csv", disabled=not events)
        st.dataframe(events, hide_index=True, width="stretch")
