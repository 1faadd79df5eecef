"""Body-part routing: which model analyses a study (shared by the web app and the API).

A checkpoint records the MURA body parts it was trained on (``metadata.body_parts``). The admin
makes one model active per body part (setting ``active_model:<PART>``); without a choice, the
overall active model serves the parts it covers, and the first model found covering a part
serves the others. A study's part comes from the user (the app's selector, the API's
``body_part`` parameter) or from the DICOM ``BodyPartExamined`` of its files.

Refused, each with a one-line :class:`~fracturescan.errors.RoutingError`: a study whose files
name different body parts, a part no model covers, and a DICOM part that contradicts the part
chosen. A study with no part (PNG/JPEG, or a DICOM value such as ``EXTREMITY`` that names no
MURA part) goes to the overall active model, as does every study when no model records its
parts (checkpoints from generic CSV or folder data sets), which keeps such set-ups working.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fracturescan.data.images import sniff_format
from fracturescan.data.records import BODY_PARTS
from fracturescan.errors import FracturescanError, RoutingError
from fracturescan.service import ModelChoice, active_model, first_usable

log = logging.getLogger(__name__)

#: DICOM BodyPartExamined defined terms (PS3.16 CID 4031) of the seven MURA parts.
DICOM_TO_MURA: dict[str, str] = {part.removeprefix("XR_"): part for part in BODY_PARTS}
DICOM_TO_MURA["UPPER ARM"] = "XR_HUMERUS"
#: Values that name no one part: such files do not decide the route.
UNSPECIFIC_DICOM = frozenset({"EXTREMITY", "UPPER EXTREMITY", "UPPEREXTREMITY", "UPPER LIMB", "ARM",
                              "LIMB", "UNKNOWN", "OTHER"})


@dataclass(frozen=True)
class Route:
    """Where a study goes: the model, the study's body part (None if unknown) and why."""

    choice: ModelChoice
    body_part: str | None
    source: str  # "request" (chosen by the user), "dicom" (BodyPartExamined) or "default"
    notes: tuple[str, ...] = ()


def parse_body_part(text: str) -> str:
    """``XR_ELBOW``, ``elbow`` or ``Elbow`` -> ``XR_ELBOW``.

    Raises:
        RoutingError: not one of MURA's seven body parts.
    """
    key = text.strip().upper().replace("-", "_")
    part = key if key.startswith("XR_") else f"XR_{key}"
    if part not in BODY_PARTS:
        raise RoutingError(f"Unknown body part {text.strip()[:40]!r}: choose one of {', '.join(BODY_PARTS)}.")
    return part


def covered_parts(models: Sequence[ModelChoice]) -> dict[str, list[ModelChoice]]:
    """{MURA part: the models whose checkpoints record it}, parts in MURA order."""
    return {part: [m for m in models if part in (m.metadata.body_parts or ())] for part in BODY_PARTS
            if any(part in (m.metadata.body_parts or ()) for m in models)}


def part_model(engine: Any, models: Sequence[ModelChoice], part: str) -> ModelChoice | None:
    """The active model for ``part``: the admin's choice, else the overall active model if it
    covers the part, else the first model covering it; None when no model covers it."""
    from fracturescan.store import settings

    eligible = covered_parts(models).get(part, [])
    wanted = settings.get_setting(engine, settings.part_model_key(part))
    for choice in eligible:
        if choice.model_id == wanted:
            return choice
    default = active_model(engine, list(models))
    if default is not None and default.model_id in {m.model_id for m in eligible}:
        return default
    return first_usable(eligible) or (eligible[0] if eligible else None)


def part_assignments(engine: Any, models: Sequence[ModelChoice]) -> dict[str, ModelChoice | None]:
    """The model each of MURA's seven parts goes to now (None: no model covers it)."""
    return {part: part_model(engine, models, part) for part in BODY_PARTS}


def _dicom_parts(uploads: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(file name, BodyPartExamined) of the uploads that are DICOM and carry one."""
    from fracturescan.data.dicom_dataset import dicom_metadata_safe, load_dataset

    found = []
    for name, data in uploads:
        if sniff_format(data) != "dicom" and not name.lower().endswith((".dcm", ".dicom")):
            continue
        try:
            value = dicom_metadata_safe(load_dataset(data, pixels=False, force=True))["body_part_examined"]
        except FracturescanError:
            continue  # an unreadable file: the analysis reports it by name
        if value:
            found.append((name, str(value).strip().upper()))
    return found


def _study_part(uploads: Sequence[tuple[str, bytes]]) -> tuple[str | None, str | None, list[str]]:
    """(MURA part or foreign DICOM value, the DICOM text it came from, notes) of the uploads."""
    values = _dicom_parts(uploads)
    notes = [f"{name}: DICOM body part {value} names no single MURA part; it did not choose the model."
             for name, value in values if value in UNSPECIFIC_DICOM]
    decisive = [(name, value, DICOM_TO_MURA.get(value, value)) for name, value in values
                if value not in UNSPECIFIC_DICOM]
    if len({part for _, _, part in decisive}) > 1:
        listed = ", ".join(f"{name} is {value}" for name, value, _ in decisive[:4])
        raise RoutingError(f"Mixed body parts in one study ({listed}); send each body part as its own study.")
    if not decisive:
        return None, None, notes
    _, value, part = decisive[0]
    return part, value, notes


def route_study(engine: Any, models: Sequence[ModelChoice], uploads: Sequence[tuple[str, bytes]],
                requested: str | None = None) -> Route:
    """Choose the model for one study (see the module docstring for the rules).

    Args:
        engine: the app database (settings).
        models: the discovered models; at least one.
        uploads: (file name, bytes) of the study's files.
        requested: the body part the user chose, or None/'' for automatic.

    Raises:
        RoutingError: an unknown part name, mixed parts, a DICOM part contradicting the chosen
            one, or a part no model covers.
    """
    chosen = parse_body_part(requested) if requested and requested.strip() else None
    found, dicom_text, notes = _study_part(uploads)
    if chosen and found and found != chosen:
        raise RoutingError(f"The DICOM header says {dicom_text} but {chosen} was chosen; choose "
                           f"{found if found in BODY_PARTS else 'the right body part'} or check the files.")
    part = chosen or found
    default = active_model(engine, list(models))
    if default is None:
        raise RoutingError("No model is available: an administrator must configure a models folder.")
    coverage = covered_parts(models)
    if part is None or not coverage:
        if part is not None:
            notes.append(f"No model records its body parts; {part} was analysed with the default model.")
        return Route(default, part if part in BODY_PARTS else None, "default", tuple(notes))
    if part not in BODY_PARTS:
        raise RoutingError(f"No model covers {part} (DICOM body part): the models here cover "
                           f"{', '.join(coverage)} only.")
    choice = part_model(engine, models, part)
    if choice is None:
        raise RoutingError(f"No model covers {part}: the models here cover {', '.join(coverage)} only; "
                           "an administrator can add a model trained on it.")
    log.info("study routed to %s for %s (%s)", choice.model_id, part, "request" if chosen else "dicom")
    return Route(choice, part, "request" if chosen else "dicom", tuple(notes))
