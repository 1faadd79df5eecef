"""Monitoring figures read from the audit trail: analyses by decision, and the drift signal -
each day's share of abnormal decisions set against the share the model called abnormal on its
patient-level hold-out, and each day's share of flagged images (DICOM header check or input
guard) set against the share of hold-out images the checkpoint's input guard flagged.

A daily share far from the hold-out share means the patients, the images or the model's inputs
differ from what it was validated on; it is a prompt to look, not a verdict. The figures come
from the database, so several API workers and the web app report the same numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from .store.db import AuditImage, AuditStudy, utcnow


@dataclass(frozen=True)
class DayTrend:
    """One UTC day of analyses."""

    day: date
    analyses: int
    abnormal: int
    #: Audited images of the day's analyses (readable ones: those the audit trail records).
    images: int = 0
    #: Of those, images flagged as not to be trusted: a DICOM header that is not a radiograph of
    #: the model's body parts, or the input guard's "not like the training data". Images
    #: recorded before flags were (schema revision 0003) count as not flagged.
    guard_flags: int = 0

    @property
    def abnormal_share(self) -> float | None:
        """Share of the day's analyses decided abnormal (None without analyses)."""
        return self.abnormal / self.analyses if self.analyses else None

    @property
    def guard_flag_share(self) -> float | None:
        """Share of the day's audited images that were flagged (None without images)."""
        return self.guard_flags / self.images if self.images else None


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
    now = now or utcnow()
    today = now.date()
    first = today - timedelta(days=days - 1)
    since = AuditStudy.created_at >= datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    studies = select(AuditStudy.created_at, AuditStudy.abnormal).where(since)
    # One row per audited image, with its study's time.
    images = select(AuditStudy.created_at, AuditImage.guard_flags).join(
        AuditImage, AuditImage.study_id == AuditStudy.id).where(since)
    if model_id is not None:
        studies = studies.where(AuditStudy.model_id == model_id)
        images = images.where(AuditStudy.model_id == model_id)
    totals: Counter[date] = Counter()
    abnormal: Counter[date] = Counter()
    n_images: Counter[date] = Counter()
    flagged: Counter[date] = Counter()
    with engine.connect() as conn:
        # Grouped here rather than in SQL: date functions differ between SQLite and PostgreSQL,
        # and a month of one hospital's analyses is a few thousand rows.
        for created_at, is_abnormal in conn.execute(studies):
            totals[created_at.date()] += 1
            abnormal[created_at.date()] += bool(is_abnormal)
        for created_at, flags in conn.execute(images):
            n_images[created_at.date()] += 1
            flagged[created_at.date()] += bool(flags and json.loads(flags))
    return [DayTrend(day, totals[day], abnormal[day], n_images[day], flagged[day])
            for day in (first + timedelta(d) for d in range(days))]


def holdout_abnormal_share(metrics: dict[str, Any]) -> float | None:
    """The share of hold-out studies the model called abnormal at its stored threshold, from
    the checkpoint's ``metrics['holdout_study']`` confusion counts (None when not recorded)."""
    study = metrics.get("holdout_study") if isinstance(metrics, dict) else None
    try:
        return (study["tp"] + study["fp"]) / study["n"] if study and study["n"] else None
    except (KeyError, TypeError):
        return None


def holdout_guard_flag_share(guard: dict[str, Any] | None) -> float | None:
    """The share of hold-out images the checkpoint's input guard flagged: ``1 -
    kept_on_threshold_data`` of its guard summary (``metadata.json``'s ``guard``), else ``1 -
    keep`` - what the conformal threshold allows by construction (0.05 by default); None
    when the checkpoint has no input guard (then only DICOM headers can flag an image)."""
    if not isinstance(guard, dict) or not guard:
        return None
    for key in ("kept_on_threshold_data", "keep"):
        value = guard.get(key)
        if isinstance(value, (int, float)) and 0 <= value <= 1:
            return 1.0 - float(value)
    return None
