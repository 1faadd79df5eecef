"""Parsing a DICOM file and reading its non-identifying technical metadata, safely.

Holds :func:`load_dataset` (bytes or path -> pydicom ``Dataset``, pixels not decoded),
:func:`dicom_metadata_safe` (the technical fields the app shows and the audit log stores) and
the privacy guards every DICOM reader in fracturescan uses (:func:`no_value_echo`,
:func:`safe_reason`, :func:`safe_uid`, :func:`uid_name`, :func:`uid_label`).  Pixel decoding is
in :mod:`fracturescan.data.dicom`.

pydicom is an optional dependency (extra ``dicom``): it is imported inside the functions that
need it, so importing this module never requires it.

Privacy: error messages never quote text read from the file.  A damaged length field makes one
element swallow the next ones (patient name, ID, dates...), so a value shown "for context" may
be protected health information: only values that pass a strict syntax check (code strings,
UIDs) are quoted, and pydicom's value validation, which would echo such values into warnings
and logs, is switched off while fracturescan parses.
"""

from __future__ import annotations

import io
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from fracturescan.errors import ImageReadError, MissingExtraError, UnsupportedImageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

#: Keywords of the elements that hold an image's pixels.
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: What a Modality (CS) may look like when quoted in a message; a UID is digits and dots.
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
_UID_SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)*")
_BAD_UID = "<invalid UID>"
_VALIDATION_LOCK = threading.Lock()
_validation_depth = 0
_saved_validation_mode: int | None = None


@contextmanager
def no_value_echo() -> Iterator[None]:
    """Switch off pydicom's reading validation while fracturescan parses.

    Its warnings quote the offending value (``Invalid value for VR DA: '...'``) and are also
    logged, so a damaged file could put a patient's name into our logs or stderr.  The switch is
    counted under a lock, so concurrent reads (the web app) restore the mode only when the last
    one ends.
    """
    global _validation_depth, _saved_validation_mode
    from pydicom import config

    with _VALIDATION_LOCK:
        if _validation_depth == 0:
            _saved_validation_mode = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.IGNORE
        _validation_depth += 1
    try:
        yield
    finally:
        with _VALIDATION_LOCK:
            _validation_depth -= 1
            if _validation_depth == 0 and _saved_validation_mode is not None:
                config.settings.reading_validation_mode = _saved_validation_mode


def safe_reason(exc: BaseException) -> str:
    """``Type: message`` for an exception, or only its type when the message may quote file text.

    pydicom and its decoders interpolate element values in quotes; those values may be patient
    data, so such messages are reduced to the exception type.
    """
    message = str(exc)
    if (len(message) > 160 or any(q in message for q in "'\"`") or not message.isascii()
            or not message.isprintable()):
        return type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def safe_uid(uid: Any) -> str:
    """A UID as text if it is syntactically a UID, else a placeholder (it may be swallowed text)."""
    text = str(uid).strip()
    return text if len(text) <= 64 and _UID_SYNTAX.fullmatch(text) else _BAD_UID


def uid_name(uid: Any) -> str | None:
    """pydicom's name for a UID it knows; None for unknown or damaged values."""
    name = getattr(uid, "name", None)
    return name if safe_uid(uid) != _BAD_UID and name and name != str(uid) else None


def uid_label(uid: Any) -> str:
    """``'Name' (uid)`` for a UID pydicom knows, else just the sanitised UID."""
    name = uid_name(uid)
    return f"'{name}' ({safe_uid(uid)})" if name else safe_uid(uid)


def _import_pydicom() -> Any:
    """Import pydicom lazily; a missing install becomes a :class:`MissingExtraError`."""
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (submodule used by the callers)
    except ImportError as exc:
        raise MissingExtraError("pydicom", "dicom", "Reading DICOM files") from exc
    return pydicom


def load_dataset(
    data: bytes | Path, *, name: str | None = None, force: bool = False, pixels: bool = True
) -> Dataset:
    """Parse a DICOM file into a pydicom ``Dataset`` without decoding its pixels.

    Args:
        data: the file's bytes or its path.
        name: name used in error messages (defaults to the path, or ``"<bytes>"``).
        force: parse even without the ``DICM`` preamble (files written without a file header).
        pixels: ``False`` stops before the pixel data (for metadata only; faster).

    Raises:
        MissingExtraError: pydicom is not installed.
        UnsupportedImageError: the content is not DICOM.
        ImageReadError: the file cannot be read or is truncated.
    """
    pydicom = _import_pydicom()
    label = name or (str(data) if isinstance(data, Path) else "<bytes>")
    source: Any = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with no_value_echo():
            ds = pydicom.dcmread(source, force=force, stop_before_pixels=not pixels)
    except pydicom.errors.InvalidDicomError as exc:
        raise UnsupportedImageError(f"{label} is not a DICOM file ({safe_reason(exc)})") from exc
    except FileNotFoundError as exc:
        raise ImageReadError(f"{label} does not exist") from exc
    except Exception as exc:  # pydicom raises many types on malformed input
        raise ImageReadError(
            f"{label} is a corrupt or truncated DICOM file ({safe_reason(exc)})"
        ) from exc
    if len(ds) == 0:
        # pydicom returns an empty data set (with only a warning) when the file ends inside a
        # sequence of undefined length, e.g. a compressed image cut short by an upload.
        raise ImageReadError(
            f"{label} is a truncated or empty DICOM file (no data elements could be read)"
        )
    if force and not any(k in ds for k in ("SOPClassUID", "Modality", "Rows", *PIXEL_KEYWORDS)):
        # A forced parse "succeeds" on almost any bytes (HTML, text): demand real DICOM tags.
        raise UnsupportedImageError(f"{label} is not a DICOM file (no DICOM attributes found)")
    return ds


def dicom_metadata_safe(ds: Dataset) -> dict[str, str | int | None]:
    """Return only non-identifying technical fields of a dataset.

    The keys are ``modality``, ``body_part_examined``, ``photometric_interpretation``, ``rows``,
    ``columns``, ``bits_stored``, ``view_position``, ``transfer_syntax`` (UID) and
    ``transfer_syntax_name``; a missing field is ``None``.  Patient name/ID/birth date,
    accession number, institution, dates and every other identifying attribute are never
    included: this dict is what the app shows and the audit log stores.
    """

    with no_value_echo():
        return technical_fields(ds)


def technical_fields(ds: Dataset) -> dict[str, str | int | None]:
    """The body of :func:`dicom_metadata_safe`; never raises (a damaged element becomes None).

    Call it inside :func:`no_value_echo` (as :func:`dicom_metadata_safe` does).
    """

    def code(keyword: str) -> str | None:
        # Every text field here is a Code String (CS). A value that is not one is a damaged
        # element that may have swallowed its neighbours (patient name, ...): drop it.
        try:
            value = ds.get(keyword)
            text = None if value is None else str(value).strip()
        except Exception:
            return None
        return text if text and _CODE_STRING.fullmatch(text) else None

    def number(keyword: str) -> int | None:
        try:
            value = ds.get(keyword)
            return None if value is None else int(value)
        except Exception:
            return None

    try:
        uid = ds.file_meta.TransferSyntaxUID
        uid_text = None if safe_uid(uid) == _BAD_UID else safe_uid(uid)
        syntax_name = uid_name(uid)
    except Exception:
        uid_text = syntax_name = None
    return {
        "modality": code("Modality"),
        "body_part_examined": code("BodyPartExamined"),
        "photometric_interpretation": code("PhotometricInterpretation"),
        "rows": number("Rows"),
        "columns": number("Columns"),
        "bits_stored": number("BitsStored"),
        "view_position": code("ViewPosition"),
        "transfer_syntax": uid_text,
        "transfer_syntax_name": syntax_name,
    }
