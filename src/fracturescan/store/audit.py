"""The audit trail: append-only records of every analysis and the doctors' feedback.

Nothing here updates or deletes a row: corrections are new feedback rows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ..decision import study_probability
from .db import AuditImage, AuditStudy, Event, Feedback, utcnow
from .users import UserInfo


@dataclass(frozen=True)
class ImageRecord:
    """What is recorded for one analysed image (never its file name or DICOM identity tags)."""

    sha256: str
    file_type: str
    probability: float
    dicom_info: dict[str, Any] | None = None
    pixels_png: bytes | None = None
    #: Why the image is not trusted (:attr:`fracturescan.decision.ImageDecision.flags`).
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelRecord:
    """The model identity written with each analysis."""

    model_id: str
    version: str
    sha256: str
    synthetic: bool


def record_analysis(engine: Engine, user: UserInfo, model: ModelRecord, threshold: float,
                    images: Sequence[ImageRecord], shown_probability: float | None = None) -> int:
    """Store one study analysis and its images; return the study's audit id.

    The study probability is the one shown (``shown_probability``: the decision rule's, which
    leaves flagged images out), else :func:`fracturescan.decision.study_probability` of the images'; every decision
    is ``probability >= threshold``.
    """
    if not images:
        raise ValueError("an analysis needs at least one image")
    study_p = shown_probability if shown_probability is not None else study_probability(i.probability for i in images)
    with Session(engine) as session, session.begin():
        study = AuditStudy(
            created_at=utcnow(), user_id=user.id, username=user.username, model_id=model.model_id,
            model_version=model.version, model_sha256=model.sha256, synthetic_model=model.synthetic,
            threshold=threshold, n_images=len(images), study_probability=study_p,
            abnormal=study_p >= threshold,
        )
        session.add(study)
        session.flush()
        for position, image in enumerate(images):
            session.add(AuditImage(
                study_id=study.id, position=position, sha256=image.sha256, file_type=image.file_type,
                dicom_info=json.dumps(image.dicom_info, sort_keys=True) if image.dicom_info else None,
                probability=image.probability, abnormal=image.probability >= threshold,
                pixels_png=image.pixels_png, guard_flags=json.dumps(list(image.flags)),
            ))
        return study.id


def image_flags(image: AuditImage) -> list[str]:
    """The flags recorded with an audited image ([] also for rows from before they were recorded)."""
    return json.loads(image.guard_flags) if image.guard_flags else []


class FeedbackNotAllowed(PermissionError):
    """Feedback on a study by someone other than its own user or an admin."""


def record_feedback(engine: Engine, user: UserInfo, study_id: int, agrees: bool, note: str) -> int:
    """Append a reader's agreement/disagreement with study ``study_id``; return its id.

    Only the user who requested the analysis, or an admin, may (:class:`FeedbackNotAllowed`).
    """
    with Session(engine) as session, session.begin():
        study = session.get(AuditStudy, study_id)
        if study is None:
            raise ValueError(f"no analysis with audit id {study_id}")
        if study.user_id != user.id and user.role != "admin":
            raise FeedbackNotAllowed(f"Feedback on analysis #{study_id} is refused: only the doctor who "
                                     "requested it or an administrator may give it.")
        row = Feedback(study_id=study_id, created_at=utcnow(), user_id=user.id,
                       username=user.username, agrees=agrees, note=note.strip()[:4000])
        session.add(row)
        session.flush()
        return row.id


AUDIT_COLUMNS = (
    "study_id", "created_at_utc", "username", "model_id", "model_version", "model_sha256",
    "synthetic_model", "threshold", "n_images", "study_probability", "study_abnormal",
    "image_position", "image_sha256", "file_type", "image_probability", "image_abnormal",
    "pixels_stored", "image_flags", "feedback",
)


def _feedback_text(rows: list[Feedback]) -> str:
    return " | ".join(
        f"{f.created_at:%Y-%m-%d %H:%M} {f.username}: {'agree' if f.agrees else 'disagree'}"
        + (f" ({f.note})" if f.note else "") for f in rows)


def audit_rows(engine: Engine, *, since: datetime | None = None, username: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """The audit log, newest first, one row per image with its study and all its feedback."""
    with Session(engine) as session:
        query = select(AuditStudy).order_by(AuditStudy.id.desc())
        if since is not None:
            query = query.where(AuditStudy.created_at >= since)
        if username:
            query = query.where(AuditStudy.username == username)
        if limit:
            query = query.limit(limit)
        studies = session.scalars(query).all()
        ids = [s.id for s in studies]
        images = session.scalars(select(AuditImage).where(AuditImage.study_id.in_(ids))
                                 .order_by(AuditImage.study_id, AuditImage.position)).all()
        feedback = session.scalars(select(Feedback).where(Feedback.study_id.in_(ids))
                                   .order_by(Feedback.id)).all()
    by_study: dict[int, list[AuditImage]] = {}
    for image in images:
        by_study.setdefault(image.study_id, []).append(image)
    notes: dict[int, list[Feedback]] = {}
    for f in feedback:
        notes.setdefault(f.study_id, []).append(f)
    out = []
    for s in studies:
        for image in by_study.get(s.id, []):
            out.append(dict(zip(AUDIT_COLUMNS, (
                s.id, s.created_at.isoformat(timespec="seconds"), s.username, s.model_id,
                s.model_version, s.model_sha256, s.synthetic_model, s.threshold, s.n_images,
                round(s.study_probability, 6), s.abnormal, image.position, image.sha256,
                image.file_type, round(image.probability, 6), image.abnormal,
                image.pixels_png is not None, "; ".join(image_flags(image)),
                _feedback_text(notes.get(s.id, [])),
            ))))
    return out


#: First characters that make Excel, LibreOffice or Google Sheets treat a cell as a formula
#: (or, for tab and CR, shift it so the next character starts one).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EVENT_COLUMNS = ("created_at_utc", "actor", "action", "detail")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula.

    Numbers stay numbers; only strings are escaped (OWASP's advice for CSV injection).
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    # RFC 4180 line ends: with them the writer also quotes a cell holding a bare CR, which a
    # spreadsheet would otherwise take as a row break (and run what follows as a new cell).
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def audit_csv(rows: list[dict[str, Any]]) -> str:
    """The audit rows as CSV text with a header line; formula-like cells escaped."""
    return _csv(rows, AUDIT_COLUMNS)


def events_csv(rows: list[dict[str, Any]]) -> str:
    """Security events (from :func:`recent_events`) as CSV text; formula-like cells escaped."""
    return _csv(rows, EVENT_COLUMNS)


def recent_events(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Latest security events (logins, user and setting changes), newest first.

    Text is escaped for spreadsheets already: the admin page's table has its own CSV download,
    and a failed login's user name is whatever the visitor typed.
    """
    with Session(engine) as session:
        rows = session.scalars(select(Event).order_by(Event.id.desc()).limit(limit)).all()
        return [dict(zip(EVENT_COLUMNS, map(spreadsheet_safe, (
            e.created_at.isoformat(timespec="seconds"), e.actor, e.action, e.detail)))) for e in rows]


def log_event(engine: Engine, actor: str, action: str, detail: str = "") -> None:
    """Append one security event."""
    with Session(engine) as session, session.begin():
        session.add(Event(actor=actor, action=action, detail=detail, created_at=utcnow()))
