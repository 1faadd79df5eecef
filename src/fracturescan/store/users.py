"""Users: argon2 password hashes, the first admin, login with lock-out, and user management."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from fracturescan.errors import FracturescanError

from . import throttle
from .db import Event, User, format_utc, make_engine, utcnow
from .throttle import (  # noqa: F401 (API)
    BASE_LOCK,
    CLIENT_MAX_FAILURES,
    MAX_FAILURES,
    MAX_LOCK,
    client_label,
)

log = logging.getLogger(__name__)

ROLES = ("doctor", "admin")
MIN_PASSWORD_LENGTH = 12
#: User names: letters, digits, '.', '_' and '-', starting with a letter or digit. Nothing a
#: spreadsheet would run (=, +, -, @ first) and nothing Markdown or a log line would misread.
USERNAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
GENERIC_REFUSAL = "Wrong user name or password."
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


def _event(session: Session, actor: str, action: str, detail: str = "",
           at: datetime | None = None) -> None:
    session.add(Event(actor=actor, action=action, detail=detail, created_at=at or utcnow()))


def check_username(username: str) -> None:
    """Raise :class:`UserAdminError` unless ``username`` follows :data:`USERNAME_RULE`."""
    if not USERNAME_RULE.fullmatch(username):
        raise UserAdminError("A user name has 1 to 64 characters: letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit (e.g. 'dr.smith').")


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
    check_username(username)
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


#: Kept for callers of the old name; the rule lives in :mod:`fracturescan.store.throttle`.
_lock_for = throttle.lock_for


def authenticate(engine: Engine, username: str, password: str, now: datetime | None = None,
                 client: str | None = None) -> UserInfo:
    """Return the user for valid credentials; raise :class:`AuthenticationError` otherwise.

    ``client`` is the caller's address: failures are throttled per client (and per client and
    user name), so nobody can lock an account out from another computer. Every refused attempt
    is an event; a throttled attempt is refused before any password is checked, with the same
    answer whether the user exists or not.
    """
    now = now or utcnow()
    client = client_label(client)
    # The transaction must commit before the error is raised (an exception inside
    # ``session.begin()`` would roll back the recorded failure with it).
    with Session(engine) as session, session.begin():
        name = username.strip()
        actor = name if USERNAME_RULE.fullmatch(name) else "(invalid name)"
        wait = throttle.wait_seconds(session, client, actor, now)
        if wait:
            _event(session, actor, throttle.REFUSED, throttle.detail(client, f"throttled, {wait} s left"), now)
            refusal: str | None = f"Too many failed attempts: try again in {wait} s."
        else:
            user = session.scalar(select(User).where(User.username == name)) if actor == name else None
            refusal = _check_login(session, user, actor, password, now, client)
        if refusal is None:
            user.failed_logins, user.locked_until = 0, None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            _event(session, user.username, throttle.LOGIN, throttle.detail(client), now)
            info = _info(user)
    if refusal is not None:
        raise AuthenticationError(refusal)
    return info


def _check_login(session: Session, user: User | None, actor: str, password: str,
                 now: datetime, client: str) -> str | None:
    """The refusal message for this attempt (recording failures), or None when it succeeds."""
    if user is None:
        _verify(_DUMMY_HASH, password)  # a miss takes as long as a wrong password
        _event(session, actor, throttle.FAILED, throttle.detail(client, "unknown user"), now)
        return GENERIC_REFUSAL
    if not _verify(user.password_hash, password):
        user.failed_logins += 1  # shown to admins; locks nothing by itself
        _event(session, user.username, throttle.FAILED,
               throttle.detail(client, f"wrong password, failure {user.failed_logins}"), now)
        return GENERIC_REFUSAL
    if not user.active:
        _event(session, user.username, throttle.REFUSED, throttle.detail(client, "account disabled"), now)
        return "This account is disabled; ask an administrator."
    return None


def unlock(engine: Engine, username: str, *, actor: str, now: datetime | None = None) -> None:
    """Forget ``username``'s failed logins, from every client (``fracturescan user unlock``)."""
    with Session(engine) as session, session.begin():
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise UserAdminError(f"No user named {username!r}; `fracturescan user list` shows them.")
        user.failed_logins, user.locked_until = 0, None
        _event(session, actor, throttle.UNLOCKED, user.username, now)


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


def get_user_by_name(engine: Engine, username: str) -> UserInfo | None:
    """The user named ``username`` (None if there is none)."""
    with Session(engine) as session:
        user = session.scalar(select(User).where(User.username == username))
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
    """The database at ``url``, ready: tables created and, on an empty user table with
    ``FRACTURESCAN_ADMIN_PASSWORD`` set, the first ``admin`` with that password.

    Without that variable no account is made here: the commands that start a server (and
    ``fracturescan user create-admin``) call :func:`ensure_admin` and print the one-time password
    on their terminal. It never goes through logging, whose records get shipped and kept.
    """
    import os

    engine = make_engine(url)
    if os.environ.get(ADMIN_PASSWORD_ENV):
        ensure_admin(engine, os.environ[ADMIN_PASSWORD_ENV])
    return engine


def has_users(engine: Engine) -> bool:
    """True once any account exists."""
    with Session(engine) as session:
        return bool(session.scalar(select(func.count()).select_from(User)))


def anyone_logged_in(engine: Engine) -> bool:
    """True once anybody has logged in (the login page stops explaining the first start)."""
    with Session(engine) as session:
        return session.scalar(select(Event.id).where(Event.action == throttle.LOGIN).limit(1)) is not None
