"""DICOM pixel decoding to a display-ready grayscale image: :func:`read_dicom`.

Parsing a file into a ``Dataset``, the de-identified technical metadata and the privacy guards
(error messages never quote text read from the file) are in
:mod:`fracturescan.data.dicom_dataset`; :func:`load_dataset` and :func:`dicom_metadata_safe`
stay importable from here.

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
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fracturescan.data.dicom_dataset import (
    PIXEL_KEYWORDS,
    dicom_metadata_safe,  # noqa: F401  (public name, still imported from this module)
    load_dataset,
    no_value_echo,
    safe_reason,
    safe_uid,
    technical_fields,
    uid_label,
    uid_name,
)
from fracturescan.data.limits import DEFAULT_MAX_PIXELS, check_compression_ratio, check_pixel_count
from fracturescan.errors import ImageReadError, MissingExtraError, UnsupportedImageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights; the same ones Pillow uses for ``convert("L")``.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_INSTALL_HINT = (
    "install a decoder plugin (pip install python-gdcm, which fracturescan's dicom, app and api "
    "extras include; or pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or export "
    "the image as PNG"
)


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
        with no_value_echo():
            _check_decodable(ds, label, max_pixels)
            _check_ratio(ds, label, len(data) if isinstance(data, bytes) else Path(data).stat().st_size)
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
            f"{label} is a corrupt DICOM file ({safe_reason(exc)}); re-export it"
        ) from exc
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def _check_decodable(ds: Dataset, label: str, max_pixels: int) -> None:
    """Refuse, before decoding, files without pixels, too large, or with an unusable codec."""
    if not any(k in ds for k in PIXEL_KEYWORDS):
        modality = technical_fields(ds)["modality"] or "unknown"
        # A DICOMDIR names its class only in the file meta header.
        sop = ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
        sop_name = (uid_name(sop) or safe_uid(sop)) if sop else ""
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
            f"{label} declares '{safe_uid(uid)}' as its transfer syntax, which is not a DICOM "
            "transfer syntax; the file is corrupt or non-standard: export the image as PNG"
        )
    if uid.is_compressed:
        _check_codec(uid, label, _bits_stored(ds))
    elif "PixelData" in ds:
        _check_native_length(ds, label, rows, cols)


def _check_ratio(ds: Dataset, label: str, file_bytes: int) -> None:
    """Refuse compressed pixel data that would decode to far more than the file holds."""
    try:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frame_bytes = int(ds.Rows) * int(ds.Columns) * samples * max(bits, 8) // 8
    except (AttributeError, TypeError, ValueError):
        return  # _check_decodable already refused what it could not size
    check_compression_ratio(frame_bytes, file_bytes, label)


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


#: JPEG Extended (Process 2 & 4): python-gdcm and Pillow decode its 8-bit form only.
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
_JPEG12_HINT = (
    "only pylibjpeg-libjpeg decodes it here (python-gdcm and Pillow handle 8-bit JPEG only): "
    "install the optional extra with pip install 'fracturescan[jpeg12]' (pylibjpeg-libjpeg is "
    "licensed under the GNU GPL v3, unlike fracturescan's MIT licence: check that this suits "
    "your use), or export the image as PNG"
)


def _check_codec(uid: Any, label: str, bits_stored: int = 8) -> None:
    """Raise :class:`UnsupportedImageError` when no installed plugin decodes ``uid`` (at
    ``bits_stored`` bits, which matters for 12-bit JPEG Extended)."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise UnsupportedImageError(
            f"{label} uses the transfer syntax {uid_label(uid)}, which pydicom cannot "
            "decode; export the image as PNG"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedImageError(
            f"{label} is compressed with {uid_label(uid)} and no installed decoder "
            f"handles it: {_INSTALL_HINT}"
        )
    if uid == JPEG_EXTENDED and bits_stored > 8 and "pylibjpeg" not in decoder.available_plugins:
        raise UnsupportedImageError(
            f"{label} is compressed with {uid_label(uid)} at {bits_stored} bits: {_JPEG12_HINT}"
        )


def _bits_stored(ds: Dataset) -> int:
    """BitsStored (else BitsAllocated, else 8); 8 when invalid."""
    try:
        return int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        return 8


def _check_native_length(ds: Dataset, label: str, rows: int, cols: int) -> None:
    """Uncompressed data must hold exactly what Rows x Columns x frames declare."""
    frames = _frame_count(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    n_values = rows * cols * samples * frames
    if samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        n_values = n_values * 2 // 3  # chroma halved horizontally: Y Y Cb Cr per pixel pair
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
        reasons = _plugin_reasons(exc)
        detail = f"{reasons}; the compressed stream is damaged or non-standard" if reasons else safe_reason(exc)
        raise ImageReadError(
            f"{label}: the pixel data cannot be decoded ({detail}); re-export the image"
        ) from exc


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _plugin_reasons(exc: BaseException) -> str:
    """Each decoder plugin's own reason from pydicom's "all plugins failed" message, with any
    quoted text removed (it could be file content), e.g. ``gdcm: GDCM does not support … for
    samples with 12-bit precision``; '' when the message has no such lines."""
    reasons = []
    for line in str(exc).splitlines()[1:]:
        plugin, _, text = line.strip().partition(": ")
        if not (plugin.isidentifier() and text):
            continue
        if text.isascii() and text.isprintable():
            reasons.append(f"{plugin}: {_QUOTED.sub('…', text)[:200]}")
    return "; ".join(reasons)


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
                       safe_reason(exc))
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
