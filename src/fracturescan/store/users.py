"""Users: argon2 password hashes, the first admin, login with lock-out, and user management."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from fracturescan.errors import FracturescanError

from .db import Event, User, format_utc, make_engine, utcnow

log = logging.getLogger(__name__)

ROLES = ("doctor", "admin")
MIN_PASSWORD_LENGTH = 12
#: Failed logins allowed before the account locks; each further failure doubles the lock.
MAX_FAILURES = 5
BASE_LOCK = timedelta(seconds=30)
MAX_LOCK = timedelta(minutes=15)
ADMIN_PASSWORD_ENV = "FRACTURESCAN_ADMIN_PASSWORD"

_hasher = PasswordHasher()
# Verified against unknown user names so that a miss takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password-only-for-timing")


class AuthenticationError(FracturescanError):
    """Login refused: wrong credentials, disabled or locked account."""


class UserAdminError(FracturescanError):
    """A user-management request is invalid (weak password, duplicate name, unknown role...)."""


@dataclass(frozen=True)
class UserInfo:
    """What the app keeps about the logged-in user (a detached copy of the row)."""

    id: int
    username: str
    role: str
    active: bool
    must_change_password: bool
    session_version: int


def _info(user: User) -> UserInfo:
    return UserInfo(user.id, user.username, user.role, user.active,
                    user.must_change_password, user.session_version)


def _event(session: Session, actor: str, action: str, detail: str = "") -> None:
    session.add(Event(actor=actor, action=action, detail=detail, created_at=utcnow()))


def check_password_strength(password: str) -> None:
    """Raise :class:`UserAdminError` for a password shorter than the minimum length."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserAdminError(
            f"Passwords need at least {MIN_PASSWORD_LENGTH} characters; a passphrase of a few "
            "words is easy to remember."
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserAdminError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")


def create_user(engine: Engine, username: str, password: str, role: str, *, actor: str,
                must_change_password: bool = False) -> UserInfo:
    """Create a user with an argon2 hash of ``password``."""
    username = username.strip()
    if not username or len(username) > 64:
        raise UserAdminError("A user name needs 1 to 64 characters.")
    _check_role(role)
    check_password_strength(password)
    with Session(engine) as session, session.begin():
        if session.scalar(select(User).where(User.username == username)) is not None:
            raise UserAdminError(f"A user named {username!r} already exists; pick another name.")
        user = User(username=username, password_hash=_hasher.hash(password), role=role, active=True,
                    must_change_password=must_change_password, failed_logins=0, session_version=1,
                    created_at=utcnow())
        session.add(user)
        _event(session, actor, "user_created", f"{username} ({role})")
        session.flush()
        return _info(user)


def ensure_admin(engine: Engine, env_password: str | None) -> str | None:
    """On an empty user table create ``admin``; return the one-time password if one was made.

    With ``env_password`` (from ``FRACTURESCAN_ADMIN_PASSWORD``) that password is used;
    otherwise a random one is generated, which must be changed at first login.
    """
    with Session(engine) as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
    if env_password:
        create_user(engine, "admin", env_password, "admin", actor="system")
        log.info("created the first admin user 'admin' from %s", ADMIN_PASSWORD_ENV)
        return None
    one_time = secrets.token_urlsafe(12)
    create_user(engine, "admin", one_time, "admin", actor="system", must_change_password=True)
    return one_time


def _lock_for(failures: int) -> timedelta:
    """Lock duration after ``failures`` consecutive failures (0 below the limit)."""
    if failures < MAX_FAILURES:
        return timedelta(0)
    # Cap the exponent: after hundreds of failures 2**n would overflow timedelta.
    return min(BASE_LOCK * (2 ** min(failures - MAX_FAILURES, 16)), MAX_LOCK)


def authenticate(engine: Engine, username: str, password: str,
                 now: datetime | None = None) -> UserInfo:
    """Return the user for valid credentials; raise :class:`AuthenticationError` otherwise."""
    now = now or utcnow()
    # The transaction must commit before the error is raised (an exception inside
    # ``session.begin()`` would roll back the failure count and the lock-out with it).
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.username == username.strip()))
        refusal = _check_login(session, user, username, password, now)
        if refusal is None:
            user.failed_logins, user.locked_until = 0, None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            _event(session, user.username, "login")
            info = _info(user)
    if refusal is not None:
        raise AuthenticationError(refusal)
    return info


def _check_login(session: Session, user: User | None, username: str, password: str,
                 now: datetime) -> str | None:
    """The refusal message for this attempt (recording failures), or None when it succeeds."""
    generic = "Wrong user name or password."
    if user is None:
        _verify(_DUMMY_HASH, password)
        _event(session, username[:64], "login_failed", "unknown user")
        return generic
    if user.locked_until is not None and user.locked_until > now:
        wait = int((user.locked_until - now).total_seconds()) + 1
        return f"Too many failed attempts: try again in {wait} s."
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        lock = _lock_for(user.failed_logins)
        user.locked_until = now + lock if lock else None
        _event(session, user.username, "login_failed", f"failure {user.failed_logins}")
        return generic
    if not user.active:
        return "This account is disabled; ask an administrator."
    return None


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def get_user(engine: Engine, user_id: int) -> UserInfo | None:
    """The user's current state (None if the row is gone)."""
    with Session(engine) as session:
        user = session.get(User, user_id)
        return None if user is None else _info(user)


def list_users(engine: Engine) -> list[dict[str, object]]:
    """Every user as a dict for display (no hashes)."""
    with Session(engine) as session:
        rows = session.scalars(select(User).order_by(User.username)).all()
        return [{"username": u.username, "role": u.role, "active": u.active,
                 "failed_logins": u.failed_logins, "must_change_password": u.must_change_password,
                 "created_at (UTC)": format_utc(u.created_at)} for u in rows]


def _update(engine: Engine, username: str, actor: str, action: str, detail: str, change) -> None:
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise UserAdminError(f"No user named {username!r}.")
        change(session, user)
        user.session_version += 1
        _event(session, actor, action, f"{username}{': ' + detail if detail else ''}")


def _count_active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active.is_(True))) or 0


def set_active(engine: Engine, username: str, active: bool, *, actor: str) -> None:
    """Enable or disable a user; a disabled user's open sessions end on their next action."""
    def change(session: Session, user: User) -> None:
        if not active and user.role == "admin" and user.active and _count_active_admins(session) <= 1:
            raise UserAdminError("Refused: this is the last active admin; create another admin first.")
        user.active = active
        if active:
            user.failed_logins, user.locked_until = 0, None
    _update(engine, username, actor, "user_enabled" if active else "user_disabled", "", change)


def set_role(engine: Engine, username: str, role: str, *, actor: str) -> None:
    """Change a user's role (the last active admin cannot be demoted)."""
    _check_role(role)

    def change(session: Session, user: User) -> None:
        if user.role == "admin" and role != "admin" and user.active and _count_active_admins(session) <= 1:
            raise UserAdminError("Refused: this is the last active admin; create another admin first.")
        user.role = role
    _update(engine, username, actor, "role_changed", role, change)


def set_password(engine: Engine, username: str, password: str, *, actor: str,
                 must_change: bool = False) -> None:
    """Set a new password (admin reset: ``must_change=True``; own change: False)."""
    check_password_strength(password)

    def change(session: Session, user: User) -> None:
        user.password_hash = _hasher.hash(password)
        user.must_change_password = must_change
        user.failed_logins, user.locked_until = 0, None
    _update(engine, username, actor, "password_reset" if must_change else "password_changed", "", change)


def open_store(url: str) -> Engine:
    """The database at ``url``, ready: tables created and, on an empty user table, the first
    ``admin`` (from ``FRACTURESCAN_ADMIN_PASSWORD``, else a one-time password written to the
    server log only: whoever started the server is the first admin)."""
    import os

    engine = make_engine(url)
    one_time = ensure_admin(engine, os.environ.get(ADMIN_PASSWORD_ENV))
    if one_time:
        log.warning("Created user 'admin' with one-time password: %s (change it at first login)",
                    one_time)
    return engine
