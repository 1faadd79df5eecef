"""The "API keys" admin page: a key is shown once, listed by its prefix only, and revocable."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from .conftest import ADMIN_PASSWORD
from .test_app import login, new_app, texts

from streamlit.testing.v1 import AppTest  # noqa: E402  (after the importorskips in conftest)

from fracturescan.store import apikeys, users  # noqa: E402
from fracturescan.store.db import Event  # noqa: E402


def keys_page() -> AppTest:
    at = login(new_app(), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = "keys"
    return at.run()


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def create(at: AppTest, owner: str | None, name: str) -> AppTest:
    if owner is not None:
        at.selectbox(key="apikey_user").select(owner)
    at.text_input(key="apikey_name").input(name)
    return click(at, "Create key")


def shown_key(at: AppTest) -> str:
    codes = [c.value for c in at.code]
    assert len(codes) == 1, codes
    return codes[0]


def page_dump(at: AppTest) -> str:
    """Every text, code block and table cell the page shows."""
    tables = "\n".join(df.value.to_csv() for df in at.dataframe)
    return "\n".join([texts(at), *(c.value for c in at.code), tables])


def event_details(engine) -> str:
    with Session(engine) as s:
        return "\n".join(f"{e.actor} {e.action} {e.detail}" for e in s.scalars(select(Event)))


def test_admin_creates_a_key_that_is_shown_once(engine) -> None:
    at = create(keys_page(), "drsmith", "PACS bridge")
    assert not at.exception and not at.error
    key = shown_key(at)
    assert key.startswith(apikeys.KEY_PREFIX)
    assert apikeys.authenticate_key(engine, key).username == "drsmith"  # independent check
    assert "not be shown again" in texts(at) and "PACS bridge" in texts(at)
    assert key not in event_details(engine)  # only the prefix is recorded
    assert "api_key_created" in event_details(engine)
    assert [b.label for b in at.button if b.label == "Create key"] == []  # no second key yet

    listed = at.dataframe[0].value
    prefix = apikeys.list_keys(engine)[0].prefix
    assert list(listed["key"]) == [prefix + "…"] and list(listed["user"]) == ["drsmith"]
    assert key not in listed.to_csv()

    at = click(at, "Done, I stored it")
    assert not at.exception and len(at.code) == 0
    dump = page_dump(at)
    assert key not in dump and prefix + "…" in dump
    assert at.text_input(key="apikey_name").value == ""  # ready for the next key


def test_leaving_the_page_forgets_the_new_key(engine) -> None:
    at = create(keys_page(), "drsmith", "Night batch")
    key = shown_key(at)
    at.query_params["page"] = "users"
    at.run()
    at.query_params["page"] = "keys"
    at.run()
    assert not at.exception and len(at.code) == 0 and key not in page_dump(at)
    assert apikeys.authenticate_key(engine, key).username == "drsmith"  # still valid, just hidden


def test_admin_revokes_a_key_after_confirming(engine) -> None:
    _, key = apikeys.create_key(engine, "drsmith", "Old scanner", actor="test")
    _, other = apikeys.create_key(engine, "admin", "Keep me", actor="test")
    key_id = apikeys.list_keys(engine, "drsmith")[0].id
    at = keys_page()
    at.selectbox(key="apikey_revoke_id").select(key_id)
    at = click(at, "Revoke key")  # the confirmation box is not ticked: nothing happens
    assert any(f"Key #{key_id} was not revoked" in e.value for e in at.error)
    assert apikeys.authenticate_key(engine, key).username == "drsmith"

    at.selectbox(key="apikey_revoke_id").select(key_id)
    at.checkbox(key="apikey_revoke_confirm").check()
    at = click(at, "Revoke key")
    assert not at.exception and not at.error
    assert any(f"Revoked API key #{key_id}" in s.value for s in at.success)
    with pytest.raises(users.AuthenticationError):
        apikeys.authenticate_key(engine, key)
    assert apikeys.authenticate_key(engine, other).username == "admin"
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[key_id, "revoked (UTC)"] != "—"
    assert at.selectbox(key="apikey_revoke_id").options == [
        f"#{k.id} Keep me (admin, {k.prefix}…)" for k in apikeys.list_keys(engine, "admin")]
    assert "api_key_revoked" in event_details(engine)


@pytest.mark.parametrize("owner, name, message", [
    ("drsmith", "   ", "needs a name of 1 to 64 characters"),
    (None, "PACS bridge", "Choose the user the new key will act as."),
])
def test_invalid_requests_show_the_reason_and_create_nothing(engine, owner, name, message) -> None:
    at = create(keys_page(), owner, name)
    assert not at.exception and len(at.code) == 0
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert apikeys.list_keys(engine) == []


def test_only_active_users_are_offered(engine) -> None:
    users.create_user(engine, "drgone", "gone-password-123", "doctor", actor="test")
    users.set_active(engine, "drgone", False, actor="test")
    at = keys_page()
    assert at.selectbox(key="apikey_user").options == ["admin", "drsmith"]
    assert "No API keys yet." in texts(at) and "No active key to revoke." in texts(at)
    assert "Authorization: Bearer <key>" in texts(at) and "/docs" in texts(at)


def test_key_lifetime_defaults_to_a_year_and_can_be_set(engine) -> None:
    from datetime import timedelta

    from fracturescan.store.db import utcnow

    at = create(keys_page(), "drsmith", "default lifetime")
    [first] = apikeys.list_keys(engine, "drsmith")
    assert abs(first.expires_at - (utcnow() + timedelta(days=365))) < timedelta(minutes=5)
    assert f"expires: {first.expires_at:%Y-%m-%d}" in texts(at)
    at = click(at, "Done, I stored it")
    at.number_input(key="apikey_days").set_value(0)
    at = create(at, "drsmith", "no expiry")
    assert "expires: never" in texts(at)
    assert [k.expires_at is None for k in apikeys.list_keys(engine, "drsmith")] == [False, True]
    assert "expires (UTC)" in page_dump(at)
