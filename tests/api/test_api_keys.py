"""API keys in the store: created once, stored only as a hash, refused once revoked or disabled."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from fracturescan.store import apikeys, users
from fracturescan.store.db import ApiKey, Event, utcnow


def test_key_authenticates_its_owner_and_only_its_hash_is_stored(engine) -> None:
    info, key = apikeys.create_key(engine, "drsmith", "PACS bridge", actor="admin")
    assert key.startswith(apikeys.KEY_PREFIX) and len(key) >= 40
    user = apikeys.authenticate_key(engine, key)
    assert (user.username, user.role) == ("drsmith", "doctor")
    with engine.connect() as conn:
        dump = "\n".join(str(row) for row in conn.execute(text("SELECT * FROM api_keys")))
    assert key not in dump and key[12:] not in dump  # only the short prefix is kept in clear
    assert hashlib.sha256(key.encode()).hexdigest() in dump
    with Session(engine) as session:
        actions = session.scalars(select(Event.action)).all()
    assert "api_key_created" in actions and key not in str(actions)
    assert info.prefix == key[:12]


def test_two_keys_are_different_and_each_works(engine) -> None:
    _, first = apikeys.create_key(engine, "drsmith", "one", actor="admin")
    _, second = apikeys.create_key(engine, "drsmith", "two", actor="admin")
    assert first != second
    assert apikeys.authenticate_key(engine, first).username == apikeys.authenticate_key(engine, second).username


@pytest.mark.parametrize("bad", ["", "fsk_", "not-a-key", "fsk_" + "A" * 43, "fsk_" + "x" * 500])
def test_unknown_or_malformed_keys_are_refused_alike(engine, bad: str) -> None:
    with pytest.raises(users.AuthenticationError, match="Invalid or revoked API key"):
        apikeys.authenticate_key(engine, bad)


def test_revoked_key_is_refused_at_once_and_others_keep_working(engine) -> None:
    info, key = apikeys.create_key(engine, "drsmith", "old", actor="admin")
    _, other = apikeys.create_key(engine, "drsmith", "new", actor="admin")
    revoked = apikeys.revoke_key(engine, info.id, actor="admin")
    assert revoked.revoked_at is not None
    with pytest.raises(users.AuthenticationError, match="revoked"):
        apikeys.authenticate_key(engine, key)
    assert apikeys.authenticate_key(engine, other).username == "drsmith"
    assert apikeys.revoke_key(engine, info.id, actor="admin").revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(users.UserAdminError, match="No API key with id 999"):
        apikeys.revoke_key(engine, 999, actor="admin")


def test_disabled_account_key_is_refused_and_cannot_get_new_keys(engine) -> None:
    _, key = apikeys.create_key(engine, "drsmith", "k", actor="admin")
    users.set_active(engine, "drsmith", False, actor="admin")
    with pytest.raises(users.AuthenticationError, match="disabled"):
        apikeys.authenticate_key(engine, key)
    with pytest.raises(users.UserAdminError, match="disabled"):
        apikeys.create_key(engine, "drsmith", "k2", actor="admin")
    users.set_active(engine, "drsmith", True, actor="admin")
    assert apikeys.authenticate_key(engine, key).username == "drsmith"


def test_key_for_unknown_user_or_without_name_is_refused(engine) -> None:
    with pytest.raises(users.UserAdminError, match="No user named 'nobody'"):
        apikeys.create_key(engine, "nobody", "k", actor="admin")
    with pytest.raises(users.UserAdminError, match="name of 1 to 64"):
        apikeys.create_key(engine, "drsmith", "  ", actor="admin")


def test_last_used_is_written_at_most_once_a_minute(engine) -> None:
    info, key = apikeys.create_key(engine, "drsmith", "k", actor="admin")
    start = utcnow()
    apikeys.authenticate_key(engine, key, now=start)
    apikeys.authenticate_key(engine, key, now=start + timedelta(seconds=30))
    with Session(engine) as session:
        assert session.get(ApiKey, info.id).last_used_at == start
    apikeys.authenticate_key(engine, key, now=start + timedelta(minutes=2))
    [listed] = apikeys.list_keys(engine, "drsmith")
    assert listed.last_used_at == start + timedelta(minutes=2)
    assert apikeys.list_keys(engine, "admin") == []


def test_a_key_stops_working_when_it_expires(engine) -> None:
    info, key = apikeys.create_key(engine, "drsmith", "short", actor="admin", expires_days=30)
    assert info.expires_at - info.created_at == timedelta(days=30) and info.status() == "active"
    assert apikeys.authenticate_key(engine, key, now=info.created_at + timedelta(days=29)).username == "drsmith"
    later = info.created_at + timedelta(days=30)
    with pytest.raises(users.AuthenticationError, match=r"expired on \d{4}-\d\d-\d\d .* ask an administrator"):
        apikeys.authenticate_key(engine, key, now=later)
    assert info.status(now=later) == "expired"
    forever, _ = apikeys.create_key(engine, "drsmith", "no expiry", actor="admin", expires_days=0)
    assert forever.expires_at is None and forever.status(now=later + timedelta(days=9999)) == "active"
    with pytest.raises(users.UserAdminError, match="0 \\(no expiry\\) to 3650 days"):
        apikeys.create_key(engine, "drsmith", "too long", actor="admin", expires_days=5000)
