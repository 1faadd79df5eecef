"""DICOM decoding to a display-ready grayscale image, plus de-identified technical metadata.

pydicom is an optional dependency (extra ``dicom``): it is imported inside the functions that
need it, so importing this module never requires it.

Pipeline of :func:`read_dicom` (grayscale), in the order the DICOM standard defines:

1. Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) -> physical values.
2. VOI LUT: the VOI LUT Sequence if present, else Window Center/Width, else min-max over the
   image.  The output range of the VOI transform is measured by probing it, so the result maps
   exactly to [0, 1] whatever bit depth or rescale the file uses.
3. MONOCHROME1 is inverted so that bone (high attenuation) is bright, as in MONOCHROME2.

Choices worth knowing: a multi-frame file gives its FIRST frame (a warning is logged); colour
(RGB/YBR/palette) files are converted to luminance (ITU-R 601 weights, as for PNG/JPEG);
non-finite float pixel values are refused with :class:`ImageReadError`.

Privacy: error messages never quote text read from the file.  A damaged length field makes one
element swallow the next ones (patient name, ID, dates...), so a value shown "for context" may
be protected health information: only values that pass a strict syntax check (code strings,
UIDs) are quoted, and pydicom's value validation, which would echo such values into warnings
and logs, is switched off while fracturescan parses.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from fracturescan.data.limits import DEFAULT_MAX_PIXELS, check_pixel_count
from fracturescan.errors import ImageReadError, MissingExtraError, UnsupportedImageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights; the same ones Pillow uses for ``convert("L")``.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_INSTALL_HINT = (
    "install a decoder plugin (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
    "or pip install python-gdcm) or export the image as PNG"
)


#: What a Modality (CS) may look like when quoted in a message; a UID is digits and dots.
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
_UID_SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)*")
_BAD_UID = "<invalid UID>"
_VALIDATION_LOCK = threading.Lock()
_validation_depth = 0
_saved_validation_mode: int | None = None


@contextmanager
def _no_value_echo() -> Iterator[None]:
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


def _safe_reason(exc: BaseException) -> str:
    """``Type: message`` for an exception, or only its type when the message may quote file text.

    pydicom and its decoders interpolate element values in quotes; those values may be patient
    data, so such messages are reduced to the exception type.
    """
    message = str(exc)
    if (len(message) > 160 or any(q in message for q in "'\"`") or not message.isascii()
            or not message.isprintable()):
        return type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def _safe_uid(uid: Any) -> str:
    """A UID as text if it is syntactically a UID, else a placeholder (it may be swallowed text)."""
    text = str(uid).strip()
    return text if len(text) <= 64 and _UID_SYNTAX.fullmatch(text) else _BAD_UID


def _uid_name(uid: Any) -> str | None:
    """pydicom's name for a UID it knows; None for unknown or damaged values."""
    name = getattr(uid, "name", None)
    return name if _safe_uid(uid) != _BAD_UID and name and name != str(uid) else None


def _uid_label(uid: Any) -> str:
    """``'Name' (uid)`` for a UID pydicom knows, else just the sanitised UID."""
    name = _uid_name(uid)
    return f"'{name}' ({_safe_uid(uid)})" if name else _safe_uid(uid)


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
        with _no_value_echo():
            ds = pydicom.dcmread(source, force=force, stop_before_pixels=not pixels)
    except pydicom.errors.InvalidDicomError as exc:
        raise UnsupportedImageError(f"{label} is not a DICOM file ({_safe_reason(exc)})") from exc
    except FileNotFoundError as exc:
        raise ImageReadError(f"{label} does not exist") from exc
    except Exception as exc:  # pydicom raises many types on malformed input
        raise ImageReadError(
            f"{label} is a corrupt or truncated DICOM file ({_safe_reason(exc)})"
        ) from exc
    if len(ds) == 0:
        # pydicom returns an empty data set (with only a warning) when the file ends inside a
        # sequence of undefined length, e.g. a compressed image cut short by an upload.
        raise ImageReadError(
            f"{label} is a truncated or empty DICOM file (no data elements could be read)"
        )
    if force and not any(k in ds for k in ("SOPClassUID", "Modality", "Rows", *_PIXEL_KEYWORDS)):
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

    with _no_value_echo():
        return _technical_fields(ds)


def _technical_fields(ds: Dataset) -> dict[str, str | int | None]:
    """The body of :func:`dicom_metadata_safe`; never raises (a damaged element becomes None)."""

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
        uid_text = None if _safe_uid(uid) == _BAD_UID else _safe_uid(uid)
        uid_name = _uid_name(uid)
    except Exception:
        uid_text = uid_name = None
    return {
        "modality": code("Modality"),
        "body_part_examined": code("BodyPartExamined"),
        "photometric_interpretation": code("PhotometricInterpretation"),
        "rows": number("Rows"),
        "columns": number("Columns"),
        "bits_stored": number("BitsStored"),
        "view_position": code("ViewPosition"),
        "transfer_syntax": uid_text,
        "transfer_syntax_name": uid_name,
    }


def read_dicom(
    data: bytes | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    force: bool = False,
) -> np.ndarray:
    """Decode a DICOM radiograph to a float32 (H, W) array in [0, 1], 0 = black, bone bright.

    Args:
        data: the file's bytes or its path.
        max_pixels: refuse images with more than this many pixels (Rows x Columns), checked
            before any pixel data is decoded.
        name: name used in error messages.
        force: parse files that lack the ``DICM`` preamble.

    Raises:
        MissingExtraError: pydicom is not installed.
        UnsupportedImageError: not DICOM, or compressed with a codec no installed plugin decodes.
        ImageReadError: no pixel data, too large, inconsistent size, corrupt data.
    """
    label = name or (str(data) if isinstance(data, Path) else "<bytes>")
    ds = load_dataset(data, name=label, force=force)
    try:
        with _no_value_echo():
            _check_decodable(ds, label, max_pixels)
            frame = _decode_first_frame(ds, label)
            if frame.ndim == 3:
                image = _colour_to_gray(frame, ds)
            else:
                image = _grayscale_to_display(frame, ds, label)
    except (ImageReadError, MissingExtraError):
        raise
    except Exception as exc:
        # pydicom parses elements lazily, so a damaged header surfaces here as assorted
        # AttributeError/TypeError/NotImplementedError...: all mean "corrupt file".
        raise ImageReadError(
            f"{label} is a corrupt DICOM file ({_safe_reason(exc)}); re-export it"
        ) from exc
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def _check_decodable(ds: Dataset, label: str, max_pixels: int) -> None:
    """Refuse, before decoding, files without pixels, too large, or with an unusable codec."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        modality = _technical_fields(ds)["modality"] or "unknown"
        sop = ds.get("SOPClassUID")
        sop_name = (_uid_name(sop) or _safe_uid(sop)) if sop else ""
        sop_text = f", SOP class {sop_name}" if sop else ""
        # An image SOP class without pixels means the file was cut, not that it is a report.
        hint = (
            "the file is probably truncated; re-export it"
            if "Image Storage" in sop_name
            else "give a radiograph instead"
        )
        raise ImageReadError(
            f"{label} contains no image (modality {modality}{sop_text}): it has no pixel data; "
            f"{hint}"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageReadError(f"{label} has pixel data but no valid Rows/Columns") from exc
    check_pixel_count(cols, rows, max_pixels, label)
    _ensure_transfer_syntax(ds)
    uid = ds.file_meta.TransferSyntaxUID
    if not uid.is_transfer_syntax:
        raise UnsupportedImageError(
            f"{label} declares '{_safe_uid(uid)}' as its transfer syntax, which is not a DICOM "
            "transfer syntax; the file is corrupt or non-standard: export the image as PNG"
        )
    if uid.is_compressed:
        _check_codec(uid, label)
    elif "PixelData" in ds:
        _check_native_length(ds, label, rows, cols)


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files written without a file meta header lack the UID: infer it from the encoding."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )


def _check_codec(uid: Any, label: str) -> None:
    """Raise :class:`UnsupportedImageError` when no installed plugin decodes ``uid``."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise UnsupportedImageError(
            f"{label} uses the transfer syntax {_uid_label(uid)}, which pydicom cannot "
            "decode; export the image as PNG"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedImageError(
            f"{label} is compressed with {_uid_label(uid)} and no installed decoder "
            f"handles it: {_INSTALL_HINT}"
        )


def _check_native_length(ds: Dataset, label: str, rows: int, cols: int) -> None:
    """Uncompressed data must hold exactly what Rows x Columns x frames declare."""
    frames = _frame_count(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    n_values = rows * cols * samples * frames
    expected = (n_values + 7) // 8 if bits == 1 else n_values * bits // 8
    actual = len(ds.PixelData)
    # One trailing pad byte is legal: DICOM values have even length.
    if actual not in (expected, expected + 1):
        raise ImageReadError(
            f"{label} declares {cols}x{rows} pixels x {frames} frame(s) x {samples} sample(s) "
            f"at {bits} bits ({expected:,} bytes) but its pixel data holds {actual:,} bytes; "
            "the file is truncated or corrupt, or its header is wrong"
        )


def _frame_count(ds: Dataset) -> int:
    """Number of frames (1 when absent or invalid)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _decode_first_frame(ds: Dataset, label: str) -> np.ndarray:
    """Decode frame 0 only; multi-frame files log a warning (the rest are ignored)."""
    from pydicom.pixels import pixel_array

    frames = _frame_count(ds)
    if frames > 1:
        logger.warning("%s has %d frames: using the first frame only", label, frames)
    try:
        return np.asarray(pixel_array(ds, index=0))
    except Exception as exc:  # decoder plugins raise assorted types on bad streams
        raise ImageReadError(
            f"{label}: the pixel data cannot be decoded ({_safe_reason(exc)})"
        ) from exc


def _colour_to_gray(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB (YBR is converted to RGB by pydicom) -> luminance scaled by the stored bit depth."""
    rgb = frame[..., :3].astype(np.float64)
    luma = rgb @ np.asarray(LUMA_WEIGHTS)
    bits = int(ds.get("BitsStored", 8) or 8)
    return luma / float(2**bits - 1)


def _grayscale_to_display(frame: np.ndarray, ds: Dataset, label: str) -> np.ndarray:
    """Palette/Modality LUT -> VOI -> MONOCHROME1 inversion, giving values in [0, 1]."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds).astype(np.float64) @ np.asarray(LUMA_WEIGHTS)
        return _min_max(rgb)
    # Keep integer dtypes: a VOI LUT indexes its table with the values.
    values = np.asarray(apply_modality_lut(frame, ds))
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ImageReadError(f"{label} contains NaN or infinite pixel values")
    image = _apply_voi(values, ds, label)
    if photometric == "MONOCHROME1":
        image = 1.0 - image  # MONOCHROME1 stores bone dark; radiologists view it bright
    return image


def _apply_voi(values: np.ndarray, ds: Dataset, label: str) -> np.ndarray:
    """Apply the file's VOI LUT or window, normalised by the transform's own output range."""
    from pydicom.pixels import apply_voi_lut

    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not (has_lut or has_window):
        return _min_max(values)
    try:
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        # Probe the transform at its extremes to learn its output range exactly.
        with np.errstate(over="ignore"):
            probe = np.asarray(
                apply_voi_lut(_voi_probe(ds, has_lut), ds, index=0, prefer_lut=True),
                dtype=np.float64,
            )
    except Exception as exc:  # invalid window width, malformed LUT ...
        logger.warning("%s: ignoring an invalid VOI LUT/window (%s); using min-max", label,
                       _safe_reason(exc))
        return _min_max(values)
    low, high = (probe.min(), probe.max()) if has_lut else (probe[0], probe[-1])
    if high == low:
        return _min_max(values)
    return (out - low) / (high - low)


def _voi_probe(ds: Dataset, has_lut: bool) -> np.ndarray:
    """Inputs spanning the VOI transform: every LUT entry, or far below/above the window."""
    if has_lut:
        entries, first = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor[:2])
        return np.arange(first, first + (entries or 65536), dtype=np.int64)
    return np.array([-1e30, 1e30])


def _min_max(values: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1]; a constant image becomes all zeros (black), not NaN."""
    values = values.astype(np.float64, copy=False)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - low) / (high - low)
