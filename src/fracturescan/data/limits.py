"""Size limits shared by every image reader (PNG/JPEG/TIFF and DICOM)."""

from __future__ import annotations

from fracturescan.errors import ImageReadError

#: Largest image (width x height) the readers decode; checked from headers before decoding.
#: 36 megapixels (6000 x 6000) holds every radiograph: a 43 x 43 cm detector at 100 µm is
#: 4300 x 4300 (18.5 MP), a stitched full-leg image at 143 µm about 3000 x 9000 (27 MP).
DEFAULT_MAX_PIXELS: int = 36_000_000
#: Most decoded bytes per file byte. Lossless radiographs compress 2-4x, lossy JPEG rarely
#: past 30x; a file declaring far more pixels than its size can hold is a decompression bomb
#: (e.g. 674 KB of deflated float TIFF that decodes to 400 MB).
MAX_COMPRESSION_RATIO: int = 50
#: Below this many decoded bytes the ratio is not checked: small images are cheap whatever they
#: hold (a blank 2000 x 2000 8-bit PNG is 4 MB).
RATIO_FLOOR_BYTES: int = 16_000_000


def check_pixel_count(width: int, height: int, max_pixels: int, label: str) -> None:
    """Refuse empty images and images over ``max_pixels``, naming the file (``label``)."""
    if width <= 0 or height <= 0:
        raise ImageReadError(f"{label} declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageReadError(
            f"{label} is too large: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {max_pixels:,} pixels (max_pixels); downscale it first"
        )


def check_compression_ratio(decoded_bytes: int, file_bytes: int, label: str) -> None:
    """Refuse a file that would decode to more than :data:`MAX_COMPRESSION_RATIO` times its
    size (above :data:`RATIO_FLOOR_BYTES`), before decoding it."""
    if decoded_bytes > RATIO_FLOOR_BYTES and decoded_bytes > MAX_COMPRESSION_RATIO * max(file_bytes, 1):
        raise ImageReadError(
            f"{label} would decode to {decoded_bytes / 1e6:,.0f} MB from a {file_bytes:,}-byte file "
            f"(more than {MAX_COMPRESSION_RATIO}x compressed): it is not an ordinary radiograph export; "
            "re-export it as PNG or DICOM"
        )
