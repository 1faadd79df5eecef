"""REST API keys: one user may hold several, each revocable; only a key's SHA-256 is stored.

A key is 32 random bytes (``secrets.token_urlsafe``), so a plain SHA-256 is enough to store it
safely (unlike a password, it cannot be guessed from a dictionary), and a lookup by hash costs
one indexed query instead of an argon2 verification per request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from .db import ApiKey, User, utcnow
from .users import AuthenticationError, UserAdminError, UserInfo, _event, _info

#: Every key starts with this, so a leaked key is recognisable (e.g. by secret scanners).
KEY_PREFIX = "fsk_"
#: Keys are about 47 characters; anything much longer is not a key and is refused unhashed.
MAX_KEY_LENGTH = 128
#: ``last_used_at`` is written at most this often per key (one write per request would be waste).
LAST_USED_RESOLUTION = timedelta(minutes=1)
INVALID_KEY = "Invalid or revoked API key."
#: Longest lifetime a key may be given (ten years); the CLI and the admin page default to 365 days.
MAX_EXPIRY_DAYS = 3650
DEFAULT_EXPIRY_DAYS = 365


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as shown to admins: never the secret, only its first characters."""

    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None = None  # None: never

    def status(self, now: datetime | None = None) -> str:
        """'active', 'revoked' or 'expired'."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or utcnow()) >= self.expires_at:
            return "expired"
        return "active"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _key_info(key: ApiKey, username: str) -> ApiKeyInfo:
    return ApiKeyInfo(key.id, username, key.name, key.prefix, key.created_at, key.revoked_at,
                      key.last_used_at, key.expires_at)


def create_key(engine: Engine, username: str, name: str, *, actor: str,
               expires_days: float | None = None) -> tuple[ApiKeyInfo, str]:
    """Make a new key for an active user; return its record and the key (shown only now).

    ``expires_days``: the key stops working that many days from now (None or 0: never).
    """
    name = name.strip()
    if not name or len(name) > 64:
        raise UserAdminError("An API key needs a name of 1 to 64 characters (e.g. 'PACS bridge').")
    if expires_days is not None and not 0 <= expires_days <= MAX_EXPIRY_DAYS:
        raise UserAdminError(f"An API key's lifetime must be 0 (no expiry) to {MAX_EXPIRY_DAYS} days, "
                             f"not {expires_days:g}.")
    created = utcnow()
    expires = created + timedelta(days=expires_days) if expires_days else None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.username == username.strip()))
        if user is None:
            raise UserAdminError(f"No user named {username!r}; create the user first.")
        if not user.active:
            raise UserAdminError(f"User {username!r} is disabled; enable the account first.")
        row = ApiKey(user_id=user.id, name=name, prefix=key[:12], key_sha256=_digest(key),
                     created_at=created, expires_at=expires)
        session.add(row)
        _event(session, actor, "api_key_created", f"{user.username}: {name} ({row.prefix}…)")
        session.flush()
        return _key_info(row, user.username), key


def list_keys(engine: Engine, username: str | None = None) -> list[ApiKeyInfo]:
    """Every key (or one user's), oldest first."""
    with Session(engine) as session:
        query = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id)
        if username is not None:
            query = query.where(User.username == username)
        return [_key_info(key, name) for key, name in session.execute(query).all()]


def revoke_key(engine: Engine, key_id: int, *, actor: str) -> ApiKeyInfo:
    """Revoke key ``key_id`` at once (the next request with it is refused)."""
    with Session(engine) as session, session.begin():
        row = session.get(ApiKey, key_id)
        if row is None:
            raise UserAdminError(f"No API key with id {key_id}; `fracturescan api-key list` shows them.")
        username = session.get(User, row.user_id).username
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            _event(session, actor, "api_key_revoked", f"{username}: {row.name} ({row.prefix}…)")
        return _key_info(row, username)


def authenticate_key(engine: Engine, key: str, now: datetime | None = None) -> UserInfo:
    """The user owning a valid key; :class:`AuthenticationError` for anything else.

    Unknown, malformed and revoked keys get the same message; a disabled account says so.
    """
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
        raise AuthenticationError(INVALID_KEY)
    now = now or utcnow()
    with Session(engine) as session, session.begin():
        row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == _digest(key)))
        if row is None or row.revoked_at is not None:
            raise AuthenticationError(INVALID_KEY)
        if row.expires_at is not None and now >= row.expires_at:
            raise AuthenticationError(f"This API key expired on {row.expires_at:%Y-%m-%d %H:%M} UTC; "
                                      "ask an administrator for a new one.")
        user = session.get(User, row.user_id)
        if user is None or not user.active:
            raise AuthenticationError("This account is disabled; ask an administrator.")
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            row.last_used_at = now
        return _info(user)
