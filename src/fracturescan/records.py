"""``to_dict`` / ``from_dict`` for the small frozen dataclasses a checkpoint's ``metadata.json``
carries (calibration, decision points, input-guard summary).

A newer fracturescan may add fields: :meth:`StoredRecord.from_dict` ignores keys it does not know,
so an older version still reads the file.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that name a field of dataclass ``cls``."""
    names = {field.name for field in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


class StoredRecord:
    """Mixin for a dataclass stored as a JSON object (all its fields JSON-ready as they are)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(**known_fields(cls, data))
