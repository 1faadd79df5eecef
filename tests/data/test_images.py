"""Tests of fracturescan.data.images: every input generated here with Pillow/numpy."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracturescan.data.images import (
    DEFAULT_MAX_PIXELS,
    read_image,
    resize_square,
    sniff_format,
    to_uint8,
)
from fracturescan.errors import ImageReadError, UnsupportedImageError

LUMA = np.array([0.299, 0.587, 0.114])
RNG = np.random.default_rng(1234)


def _save(img: Image.Image, path: Path, fmt: str, **kwargs: object) -> Path:
    img.save(path, format=fmt, **kwargs)
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _bomb_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares width x height (8-bit gray); IDAT is a stub."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


# --------------------------------------------------------------------------- grayscale PNG


def test_8bit_png_values_exact(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, size=(37, 53), dtype=np.uint8)
    path = _save(Image.fromarray(arr), tmp_path / "g8.png", "PNG")
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == (37, 53)
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-7)


def test_16bit_png_keeps_precision(tmp_path: Path) -> None:
    arr = RNG.integers(0, 65536, size=(40, 30), dtype=np.uint16)
    arr[0, :4] = [0, 1000, 1001, 65535]  # neighbours that 8 bits would merge
    path = _save(Image.fromarray(arr), tmp_path / "g16.png", "PNG")
    out = read_image(path)
    np.testing.assert_allclose(out, arr / 65535.0, rtol=0, atol=1e-7)
    assert out[0, 1] < out[0, 2]
    assert out[0, 0] == 0.0 and out[0, 3] == 1.0


def test_constant_black_image_is_valid(tmp_path: Path) -> None:
    path = _save(Image.new("L", (20, 10), 0), tmp_path / "black.png", "PNG")
    out = read_image(path)
    assert out.shape == (10, 20)
    assert np.all(out == 0.0) and np.isfinite(out).all()


# --------------------------------------------------------------------------- colour inputs


def test_rgb_png_is_luminance(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    path = _save(Image.fromarray(rgb), tmp_path / "rgb.png", "PNG")
    np.testing.assert_allclose(read_image(path), (rgb @ LUMA) / 255.0, atol=1e-6)


def test_rgb_jpeg_matches_pillow_luma(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (200, 30, 90)
    rgb[:, 16:] = (10, 220, 40)
    path = tmp_path / "rgb.jpg"
    path.write_bytes(_jpeg_bytes(Image.fromarray(rgb), quality=95))
    # Independent: Pillow's own integer L conversion of the decoded file (rounding <= 1/255).
    expected = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    np.testing.assert_allclose(read_image(path), expected, atol=1.01 / 255)


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (255, 255, 255)
    rgba[0, :, 3] = 0  # fully transparent white -> black
    rgba[1, :, 3] = 255  # opaque white -> white
    rgba[2, :, 3] = 102  # 40 % opaque white -> 0.4
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", "PNG")
    out = read_image(path)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[2], 0.4, atol=1e-6)


def test_palette_png(tmp_path: Path) -> None:
    img = Image.new("P", (6, 2))
    palette = [0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    img.putpalette(palette)
    img.putdata([0, 1, 2, 1, 0, 2, 2, 2, 1, 1, 0, 0])
    path = _save(img, tmp_path / "pal.png", "PNG")
    index = np.array([0, 1, 2, 1, 0, 2, 2, 2, 1, 1, 0, 0]).reshape(2, 6)
    colours = np.array(palette[:9], dtype=float).reshape(3, 3)
    expected = (colours[index] @ LUMA) / 255.0
    np.testing.assert_allclose(read_image(path), expected, atol=1e-6)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink = white
    cmyk.paste((0, 0, 0, 255), (0, 0, 8, 16))  # full black ink on the left half
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_jpeg_bytes(cmyk, quality=95))
    out = read_image(path)
    assert out.shape == (16, 16)
    assert out[:, :6].mean() < 0.05 and out[:, 10:].mean() > 0.95


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40), dtype=np.uint8)  # stored: 20 rows x 40 columns
    arr[:8, :8] = 255  # marker in the stored top-left corner
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    path.write_bytes(_jpeg_bytes(img, quality=95, exif=exif.tobytes()))
    out = read_image(path)
    expected = np.rot90(arr, k=-1) / 255.0  # independent: numpy clockwise rotation
    assert out.shape == (40, 20)
    assert out[:8, -8:].mean() > 0.9  # marker now top-right
    assert out[:8, :8].mean() < 0.1
    assert np.abs(out - expected).mean() < 0.02


def test_bmp_webp_tiff(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, size=(12, 9), dtype=np.uint8)
    for fmt, kwargs in (("BMP", {}), ("WEBP", {"lossless": True}), ("TIFF", {})):
        path = _save(Image.fromarray(arr), tmp_path / f"x.{fmt.lower()}", fmt, **kwargs)
        np.testing.assert_allclose(read_image(path), arr / 255.0, atol=1e-6, err_msg=fmt)


def test_float_tiff_in_range_kept_and_nan_refused(tmp_path: Path) -> None:
    values = RNG.random((8, 8)).astype(np.float32)
    ok = _save(Image.fromarray(values), tmp_path / "f.tif", "TIFF")
    np.testing.assert_allclose(read_image(ok), values, atol=1e-7)
    values[3, 3] = np.nan
    bad = _save(Image.fromarray(values), tmp_path / "nan.tif", "TIFF")
    with pytest.raises(ImageReadError, match=r"nan\.tif.*NaN"):
        read_image(bad)


# --------------------------------------------------------------------------- detection & errors


def test_type_detected_by_content_not_extension(tmp_path: Path) -> None:
    arr = np.full((5, 5), 128, dtype=np.uint8)
    path = tmp_path / "really_a_png.jpg"
    _save(Image.fromarray(arr), path, "PNG")
    assert sniff_format(path.read_bytes()) == "png"
    np.testing.assert_allclose(read_image(path), 128 / 255.0, atol=1e-7)


def test_text_renamed_png_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not an image\n")
    with pytest.raises(UnsupportedImageError) as info:
        read_image(path)
    msg = str(info.value)
    assert "notes.png" in msg and "PNG" in msg and "JPEG" in msg and "DICOM" in msg


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on a forced parse of HTML
def test_html_renamed_dcm_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "page.dcm"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>" * 10)
    with pytest.raises(UnsupportedImageError, match=r"page\.dcm.*not a DICOM"):
        read_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png.*empty"):
        read_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nothere\.png.*does not exist"):
        read_image(tmp_path / "nothere.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    arr = RNG.integers(0, 256, size=(64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert path.name in msg and "truncated" in msg and fmt in msg
    assert not isinstance(info.value, UnsupportedImageError)


def test_bytes_input_uses_given_name() -> None:
    with pytest.raises(UnsupportedImageError, match=r"upload_17\.png"):
        read_image(b"GIF89a-not-accepted" * 4, name="upload_17.png")
    arr = np.array([[0, 255]], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    np.testing.assert_allclose(read_image(buf.getvalue(), name="u.png"), [[0.0, 1.0]])


def test_decompression_bomb_png_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(40_000, 40_000))
    assert path.stat().st_size < 200
    start = time.perf_counter()
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert time.perf_counter() - start < 1.0
    msg = str(info.value)
    assert "bomb.png" in msg and "40000x40000" in msg
    assert f"{DEFAULT_MAX_PIXELS:,}" in msg and "1,600,000,000" in msg


def test_jpeg_bomb_header_refused(tmp_path: Path) -> None:
    data = bytearray(_jpeg_bytes(Image.new("L", (8, 8), 0)))
    sof = data.index(b"\xff\xc0")  # baseline SOF: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"bomb\.jpg.*too large"):
        read_image(path)


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    path.write_bytes(_jpeg_bytes(Image.new("L", (300, 200), 50)))
    with pytest.raises(ImageReadError) as info:
        read_image(path, max_pixels=10_000)
    msg = str(info.value)
    assert "small.jpg" in msg and "300x200" in msg and "10,000" in msg
    assert read_image(path, max_pixels=60_000).shape == (200, 300)


def test_corrupted_bytes_only_raise_documented_errors() -> None:
    """Property: random damage gives either a valid image or an ImageReadError."""
    arr = RNG.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    sources = []
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        sources.append(buf.getvalue())
    rng = np.random.default_rng(7)
    outcomes = {"ok": 0, "error": 0}
    for data in sources:
        for _ in range(40):
            damaged = bytearray(data)
            for pos in rng.integers(0, len(damaged), size=int(rng.integers(1, 20))):
                damaged[pos] = int(rng.integers(0, 256))
            try:
                out = read_image(bytes(damaged), name="fuzz")
            except ImageReadError as exc:
                assert "fuzz" in str(exc)
                outcomes["error"] += 1
            else:
                assert out.ndim == 2 and np.isfinite(out).all()
                assert out.min() >= 0.0 and out.max() <= 1.0
                outcomes["ok"] += 1
    assert outcomes["error"] > 0


# --------------------------------------------------------------------------- resize / uint8


def test_to_uint8_rounds() -> None:
    got = to_uint8(np.array([[0.0, 1.0, 0.5, 0.25, 0.75, -0.2, 1.3]]))
    # hand-computed: 127.5 -> 128 (nearest even), 63.75 -> 64, 191.25 -> 191, clipped ends
    np.testing.assert_array_equal(got, [[0, 255, 128, 64, 191, 0, 255]])
    assert got.dtype == np.uint8
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([np.nan]))


def test_resize_square_shape_and_antialiasing() -> None:
    checker = (np.indices((512, 384)).sum(axis=0) % 2).astype(np.float32)  # 1-px checkerboard
    out = resize_square(checker, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    # Antialiased shrinking averages the pattern to mid-gray; point sampling would give 0/255.
    assert np.abs(out.astype(int) - 128).max() <= 3


def test_resize_square_squashes_and_preserves_layout() -> None:
    img = np.zeros((100, 300), dtype=np.float32)
    img[:, 200:] = 1.0  # right third white
    out = resize_square(img, 30)
    # Squash (no letterbox): the right third of the square is white, the rest black.
    assert out[:, 22:].min() == 255 and out[:, :18].max() == 0
    np.testing.assert_array_equal(resize_square(np.full((7, 3), 0.5), 5), 128)
    uint8_in = np.full((10, 10), 200, dtype=np.uint8)
    np.testing.assert_array_equal(resize_square(uint8_in, 4), 200)


def test_resize_square_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        resize_square(np.zeros((4, 4, 3)), 8)
    with pytest.raises(ValueError):
        resize_square(np.zeros((4, 4)), 0)


def test_module_imports_neither_torch_nor_pydicom() -> None:
    code = (
        "import sys, fracturescan.data.images, fracturescan.data.dicom;"
        "print('torch' in sys.modules, 'pydicom' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
