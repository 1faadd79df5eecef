"""The one image reader of fracturescan: PNG, JPEG, TIFF, BMP, WebP and DICOM to grayscale.

Every front end (training cache, CLI, web app, REST API) calls :func:`read_image`, so bad input
only ever raises :class:`~fracturescan.errors.ImageReadError` (or its subclass
:class:`~fracturescan.errors.UnsupportedImageError`), or
:class:`~fracturescan.errors.MissingExtraError` for DICOM without pydicom.

Decisions (documented once, here):

* The type is detected from the content (magic bytes), never from the extension.  The only
  exception: a file without the DICOM ``DICM`` preamble is parsed as DICOM when its name ends in
  ``.dcm``/``.dicom``.
* Colour images become luminance (ITU-R 601 weights, computed in float).  Transparency is
  **composited on black** (colour x alpha): transparent areas become the black background of a
  radiograph instead of showing whatever colour hides under alpha 0.
* 16-bit grayscale keeps its precision (divided by 65535).  32-bit integer and float images are
  divided by 65535 / kept when they already lie in [0, 65535] / [0, 1], else min-max stretched.
  Float images containing NaN or infinity are **refused** (ImageReadError), not sanitised: such
  values mean the file is not a radiograph as exported for viewing.
* Multi-page/animated files give their first page; the EXIF orientation is applied.
* Size is checked from the header before pixel data is decoded (``max_pixels``, 36 megapixels
  by default), so is the compression ratio (a file that would decode to more than 50 times its
  size, above 16 MB, is refused: see :mod:`fracturescan.data.limits`), and a JPEG
  declaring more than 2,048 pixels per byte of file is refused as truncated: a complete JPEG
  cannot be that small, and libjpeg would otherwise pad the missing data with gray.
* Pillow's own decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) still applies; its error is
  translated into an ImageReadError; between ``MAX_IMAGE_PIXELS`` (~89 M) and ``max_pixels``
  Pillow emits a ``DecompressionBombWarning`` that we leave alone (silencing it would touch the
  process-wide, non-thread-safe warning filters).
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fracturescan.data.dicom import LUMA_WEIGHTS
from fracturescan.data.limits import DEFAULT_MAX_PIXELS, check_compression_ratio, check_pixel_count
from fracturescan.errors import FracturescanError, ImageReadError, UnsupportedImageError

logger = logging.getLogger(__name__)

#: Default ceiling on width x height; larger images are refused before decoding.

#: Human-readable list used in error messages.
ACCEPTED_TYPES: str = "PNG, JPEG, TIFF, BMP, WebP or DICOM"

_DICOM_SUFFIXES = (".dcm", ".dicom")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Upper bound on pixels per byte of a complete JPEG (1 bit per 8x8 block = 512, x4 margin).
_JPEG_MAX_PIXELS_PER_BYTE = 2048
#: Bytes per pixel of Pillow's decoded modes (4 for any other: I, F, RGBA, CMYK...).
_BYTES_PER_PIXEL = {"1": 0.125, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2,
                    "I;16L": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "webp": "WEBP"}


def sniff_format(data: bytes) -> str | None:
    """Return ``png``, ``jpeg``, ``tiff``, ``bmp``, ``webp`` or ``dicom`` from magic bytes.

    Returns ``None`` for anything else (including DICOM without its ``DICM`` preamble).
    ``DICM`` at offset 128 wins over every other signature: PS3.10 leaves the 128-byte
    preamble to the application, and "dual-personality" files put a TIFF header there.
    """
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def read_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Read a radiograph as a float32 (H, W) array in [0, 1], 0 = black, as a radiologist sees it.

    Args:
        source: a path, or the file's bytes (e.g. an upload).
        max_pixels: refuse images with more than this many pixels, before decoding them.
        name: name used in error messages (useful for bytes: the uploaded file's name); for
            bytes it also decides whether a preamble-less file may be parsed as DICOM.

    Raises:
        UnsupportedImageError: the content is not an accepted image type, or a DICOM codec is
            missing.
        ImageReadError: the file is missing, empty, truncated, corrupt, too large or has no
            pixels.
        MissingExtraError: the file is DICOM and pydicom is not installed.
        TypeError: ``source`` is not a path or bytes (a programming error).
    """
    data, label = _load_bytes(source, name)
    if not data:
        raise ImageReadError(f"{label} is empty (0 bytes); expected a {ACCEPTED_TYPES} image")
    kind = sniff_format(data)
    if kind == "dicom" or (kind is None and label.lower().endswith(_DICOM_SUFFIXES)):
        from fracturescan.data.dicom import read_dicom

        return read_dicom(data, max_pixels=max_pixels, name=label, force=kind is None)
    if kind is None:
        raise UnsupportedImageError(
            f"{label} is not a recognised image (content starts with {data[:8]!r}); "
            f"accepted types: {ACCEPTED_TYPES}"
        )
    return _read_with_pillow(data, kind, label, max_pixels)


def _load_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """Return the file's bytes and the label to use in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<uploaded bytes>"
    if not isinstance(source, (str, Path)):
        raise TypeError(f"read_image expects a path or bytes, not {type(source).__name__}")
    path = Path(source)
    label = name or str(path)
    try:
        return path.read_bytes(), label
    except FileNotFoundError as exc:
        raise ImageReadError(f"{label} does not exist") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{label} is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageReadError(f"{label} cannot be read: {exc.strerror or exc}") from exc


def _read_with_pillow(data: bytes, kind: str, label: str, max_pixels: int) -> np.ndarray:
    """Decode a raster image with Pillow, enforcing the pixel limit before decoding."""
    if kind == "png":
        # The PNG header is trivial to read: checking it first keeps the message uniform even
        # for sizes that Pillow's own bomb guard would refuse with its own wording.
        check_pixel_count(*_png_size(data, label), max_pixels, label)
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as img:
            check_pixel_count(img.width, img.height, max_pixels, label)
            if kind == "jpeg":
                _check_jpeg_density(img.width * img.height, len(data), label)
            check_compression_ratio(int(img.width * img.height * _BYTES_PER_PIXEL.get(img.mode, 4)), len(data), label)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_gray_float(img, label)
    except FracturescanError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{label} is too large to decode safely ({exc}); the limit is {max_pixels:,} "
            "pixels (max_pixels)"
        ) from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise ImageReadError(
            f"{label} is a corrupt or truncated {kind.upper()} file "
            f"({type(exc).__name__}: {exc}); re-export or re-upload the image"
        ) from exc


def _png_size(data: bytes, label: str) -> tuple[int, int]:
    """Width and height from the IHDR chunk, without decoding anything."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageReadError(f"{label} is a corrupt or truncated PNG file (no IHDR header)")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_jpeg_density(pixels: int, n_bytes: int, label: str) -> None:
    """Refuse a JPEG far too small for the size it declares.

    Every 8x8 block costs at least one bit, so a complete JPEG holds >= pixels / 512 bytes.
    libjpeg silently fills a stream that ends early (at an EOI marker) with gray, so without
    this check a 700-byte file declaring 26 megapixels "decodes" to a gray picture, using
    seconds and hundreds of MB on the way.  The factor 4 margin keeps every real image.
    """
    if pixels > _JPEG_MAX_PIXELS_PER_BYTE * n_bytes:
        raise ImageReadError(
            f"{label} is a corrupt or truncated JPEG file: it declares {pixels:,} pixels but "
            f"holds only {n_bytes:,} bytes; re-export or re-upload the image"
        )


def _to_gray_float(img: Image.Image, label: str) -> np.ndarray:
    """Any Pillow mode -> float32 (H, W) luminance in [0, 1].

    8- and 16-bit data are converted in float32, in place where possible: a float64 pipeline
    needed ~40 bytes per pixel (a 26-megapixel colour JPEG took 1 GB and 2.5 s), float32 needs
    about 12, which keeps a maximum-size image affordable for the web app.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        gray = np.asarray(img, dtype=np.float32) / np.float32(65535.0)
    elif mode == "I":
        gray = _scale_wide(np.asarray(img, dtype=np.float64), 65535.0, label)
    elif mode == "F":
        gray = _scale_wide(np.asarray(img, dtype=np.float64), 1.0, label)
    elif mode in ("L", "1"):
        gray = np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)
    else:
        gray = _colour_to_luma(img)
    gray = gray.astype(np.float32, copy=False)
    return np.clip(gray, 0.0, 1.0, out=gray)


def _colour_to_luma(img: Image.Image) -> np.ndarray:
    """RGB/RGBA/LA/palette/CMYK/... -> float32 luminance, transparency composited on black."""
    has_alpha = "A" in img.getbands() or "transparency" in img.info
    rgba = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    luma = np.zeros(rgba.shape[:2], dtype=np.float32)
    term = np.empty_like(luma)
    # One channel at a time into a reused buffer: no (H, W, 3) float array is ever built.
    for channel, weight in enumerate(LUMA_WEIGHTS):
        np.multiply(rgba[..., channel], np.float32(weight / 255.0), out=term)
        luma += term
    if has_alpha:
        np.multiply(rgba[..., 3], np.float32(1.0 / 255.0), out=term)
        luma *= term
    return luma


def _scale_wide(values: np.ndarray, full_scale: float, label: str) -> np.ndarray:
    """32-bit int/float pixels: refuse non-finite, divide by ``full_scale`` if in range."""
    if not np.isfinite(values).all():
        raise ImageReadError(
            f"{label} contains NaN or infinite pixel values; export it as an 8- or 16-bit image"
        )
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= full_scale:
        return values / full_scale
    logger.info("%s: pixel range [%g, %g] outside [0, %g]; min-max stretched", label, low, high,
                full_scale)
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Convert a [0, 1] float image to uint8 for display, rounding to nearest (0.5 -> 128).

    Values outside [0, 1] are clipped; a uint8 input is returned as a copy.

    Raises:
        ValueError: the image contains NaN or infinity.
    """
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.copy()
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("to_uint8: the image contains NaN or infinite values")
    return np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Squash-resize a 2-D image to uint8 (size, size), antialiased.

    The aspect ratio is NOT preserved (no letterbox), so a heatmap on the square maps back to
    the original by a plain resize.  Resampling is Pillow's bilinear filter on the float image
    (mode ``F``); when shrinking, Pillow widens the filter by the scale factor, which is proper
    antialiasing.  The float -> uint8 conversion rounds to nearest (see :func:`to_uint8`).

    Args:
        img: float image in [0, 1] (as :func:`read_image` returns) or uint8 in [0, 255].
        size: output side length, >= 1.

    Raises:
        ValueError: ``img`` is not 2-D or ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"resize_square: size must be >= 1, got {size}")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"resize_square expects a 2-D grayscale image, got shape {arr.shape}")
    scaled = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
    resized = Image.fromarray(scaled).resize((size, size), Image.Resampling.BILINEAR)
    return to_uint8(np.asarray(resized))
