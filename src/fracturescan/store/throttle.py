"""Login throttling per client, computed from the append-only events table.

Failed logins are throttled per (client, user name) and per client, never per account alone:
whoever fails from one computer cannot lock the real user out from another. The events table
is the state (every failure is an event anyway), so the app's processes and the command line
agree, nothing is kept in memory, and no schema change is needed. A failure stops counting after
a successful login of that user from that client, or after an administrator unlocks the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .db import Event

#: Consecutive failures for one user name from one client before it must wait; each further
#: failure doubles the wait, from BASE_LOCK up to MAX_LOCK.
MAX_FAILURES = 5
BASE_LOCK = timedelta(seconds=30)
MAX_LOCK = timedelta(minutes=15)
#: Failures from one client (any user names) within CLIENT_WINDOW before it waits CLIENT_LOCK.
CLIENT_MAX_FAILURES = 20
CLIENT_WINDOW = CLIENT_LOCK = timedelta(minutes=15)
#: How far back failures are read (MAX_LOCK is reached long before).
LOOKBACK = timedelta(hours=1)

FAILED, REFUSED, LOGIN, UNLOCKED = "login_failed", "login_refused", "login", "user_unlocked"
_UNSAFE = re.compile(r"[^0-9A-Za-z.:\-]")


def client_label(client: str | None) -> str:
    """The client's address as stored in events: IP characters only, so it can be matched safely."""
    cleaned = _UNSAFE.sub("", client or "")[:45]
    return cleaned or "unknown"


def detail(client: str, text: str = "") -> str:
    """An event detail that starts with the client (what :func:`wait_seconds` matches on)."""
    return f"client {client}" + (f"; {text}" if text else "")


def lock_for(failures: int) -> timedelta:
    """Wait after ``failures`` consecutive failures (0 below the limit)."""
    if failures < MAX_FAILURES:
        return timedelta(0)
    # Cap the exponent: after hundreds of failures 2**n would overflow timedelta.
    return min(BASE_LOCK * (2 ** min(failures - MAX_FAILURES, 16)), MAX_LOCK)


@dataclass(frozen=True)
class _Row:
    at: datetime
    actor: str
    action: str
    detail: str


def wait_seconds(session: Session, client: str, username: str, now: datetime) -> int:
    """Seconds ``client`` must wait before trying ``username`` again (0: it may try now)."""
    prefix = detail(client)
    rows = [_Row(*r) for r in session.execute(
        select(Event.created_at, Event.actor, Event.action, Event.detail)
        .where(Event.created_at >= now - LOOKBACK, Event.action.in_((FAILED, LOGIN, UNLOCKED)),
               or_(Event.action == UNLOCKED, Event.detail == prefix, Event.detail.startswith(prefix + ";")))
        .order_by(Event.id)).all()]
    live: list[_Row] = []  # failures from this client not cleared by a later login or unlock
    for row in rows:
        if row.action == FAILED:
            live.append(row)
        elif row.action == UNLOCKED:
            live = [f for f in live if f.actor != row.detail]
        else:  # a successful login of row.actor from this client
            live = [f for f in live if f.actor != row.actor]
    mine = [f for f in live if f.actor == username]
    waits = [timedelta(0)]
    if mine:
        waits.append(mine[-1].at + lock_for(len(mine)) - now)
    recent = [f for f in live if f.at >= now - CLIENT_WINDOW]
    if len(recent) >= CLIENT_MAX_FAILURES:
        waits.append(recent[-1].at + CLIENT_LOCK - now)
    longest = max(waits)
    return int(longest.total_seconds()) + 1 if longest > timedelta(0) else 0
