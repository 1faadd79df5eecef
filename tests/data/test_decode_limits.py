"""Decompression cost (security review, issue 14): the pixel limit fits radiographs, and a file
that would decode to far more than its size is refused before it is decoded."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fracturescan.data.images import read_image
from fracturescan.data.limits import (
    DEFAULT_MAX_PIXELS,
    MAX_COMPRESSION_RATIO,
    RATIO_FLOOR_BYTES,
)
from fracturescan.errors import ImageReadError


def _header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_pixel_limit_fits_radiographs() -> None:
    assert 4300 * 4300 < 3000 * 9000 <= DEFAULT_MAX_PIXELS < 7000 * 7000  # detector, stitched leg
    with pytest.raises(ImageReadError, match=r"7000x7000 = 49,000,000 pixels exceeds the limit of 36,000,000"):
        read_image(_header_only_png(7000, 7000), name="big.png")


def test_a_deflated_float_tiff_bomb_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4000, 4000), np.float32), mode="F").save(buffer, "TIFF", compression="tiff_adobe_deflate")
    data = buffer.getvalue()
    decoded = 4000 * 4000 * 4
    assert decoded > RATIO_FLOOR_BYTES and decoded > MAX_COMPRESSION_RATIO * len(data)  # the attack's shape
    start = time.process_time()
    with pytest.raises(ImageReadError, match=r"bomb\.tiff would decode to 64 MB from a [0-9,]+-byte file"):
        read_image(data, name="bomb.tiff")
    assert time.process_time() - start < 0.5  # refused from the header: nothing was inflated


def test_ordinary_compression_still_reads() -> None:
    """A colour JPEG of a radiograph-sized picture (17 MB decoded, above the floor) still reads;
    the real compressed DICOM samples are read in test_dicom.py under the same check."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2400, 2400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, "JPEG", quality=90)
    assert 2400 * 2400 * 3 > RATIO_FLOOR_BYTES
    assert read_image(buffer.getvalue(), name="photo.jpg").shape == (2400, 2400)
