"""Monitoring figures read from the audit trail: analyses by decision, and the drift signal -
each day's share of abnormal decisions (and of input-guard flags) set against the share the
model called abnormal on its patient-level hold-out.

A daily share far from the hold-out share means the patients, the images or the model's inputs
differ from what it was validated on; it is a prompt to look, not a verdict. The figures come
from the database, so several API workers and the web app report the same numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from .store.db import AuditStudy, utcnow


@dataclass(frozen=True)
class DayTrend:
    """One UTC day of analyses."""

    day: date
    analyses: int
    abnormal: int
    #: Analyses whose input the input guard flagged as unlike the training images. Always 0
    #: until the input guard records its flags in the audit trail.
    guard_flags: int = 0

    @property
    def abnormal_share(self) -> float | None:
        """Share of the day's analyses decided abnormal (None without analyses)."""
        return self.abnormal / self.analyses if self.analyses else None

    @property
    def guard_flag_share(self) -> float | None:
        """Share of the day's analyses flagged by the input guard (None without analyses)."""
        return self.guard_flags / self.analyses if self.analyses else None


def decision_counts(engine: Engine) -> dict[tuple[str, bool], int]:
    """{(model_id, abnormal): number of analyses} over the whole audit trail."""
    with engine.connect() as conn:
        rows = conn.execute(select(AuditStudy.model_id, AuditStudy.abnormal, func.count())
                            .group_by(AuditStudy.model_id, AuditStudy.abnormal))
        return {(model_id, bool(abnormal)): count for model_id, abnormal, count in rows}


def daily_trend(engine: Engine, days: int = 30, model_id: str | None = None,
                now: datetime | None = None) -> list[DayTrend]:
    """The last ``days`` UTC days (oldest first, today last, days without analyses included),
    of all analyses or only ``model_id``'s."""
    today = (now or utcnow()).date()
    first = today - timedelta(days=days - 1)
    query = select(AuditStudy.created_at, AuditStudy.abnormal).where(
        AuditStudy.created_at >= datetime.combine(first, datetime.min.time(), tzinfo=(now or utcnow()).tzinfo))
    if model_id is not None:
        query = query.where(AuditStudy.model_id == model_id)
    totals: Counter[date] = Counter()
    abnormal: Counter[date] = Counter()
    with engine.connect() as conn:
        # Grouped here rather than in SQL: date functions differ between SQLite and PostgreSQL,
        # and a month of one hospital's analyses is a few thousand rows.
        for created_at, is_abnormal in conn.execute(query):
            totals[created_at.date()] += 1
            abnormal[created_at.date()] += bool(is_abnormal)
    return [DayTrend(day, totals[day], abnormal[day]) for day in (first + timedelta(d) for d in range(days))]


def holdout_abnormal_share(metrics: dict[str, Any]) -> float | None:
    """The share of hold-out studies the model called abnormal at its stored threshold, from
    the checkpoint's ``metrics['holdout_study']`` confusion counts (None when not recorded)."""
    study = metrics.get("holdout_study") if isinstance(metrics, dict) else None
    try:
        return (study["tp"] + study["fp"]) / study["n"] if study and study["n"] else None
    except (KeyError, TypeError):
        return None
