"""Size limits shared by every image reader (PNG/JPEG/TIFF and DICOM)."""

from __future__ import annotations

from fracturescan.errors import ImageReadError

#: Largest image (width x height) the readers decode; checked from headers before decoding.
DEFAULT_MAX_PIXELS: int = 100_000_000


def check_pixel_count(width: int, height: int, max_pixels: int, label: str) -> None:
    """Refuse empty images and images over ``max_pixels``, naming the file (``label``)."""
    if width <= 0 or height <= 0:
        raise ImageReadError(f"{label} declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageReadError(
            f"{label} is too large: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {max_pixels:,} pixels (max_pixels); downscale it first"
        )
