"""A catalogue of broken, hostile and unusual image files, generated in code (no binaries).

Each :class:`BadInput` knows how to write itself into a folder and what :func:`read_image` must
do with it: either read it (:class:`Reads`, with a property checked on the pixels) or raise a
specific exception whose message contains a phrase a clinician can act on (:class:`Fails`).
The seeds used by the fuzz test (:func:`seed_png`, :func:`seed_jpeg`, :func:`seed_dicom`) live
here too, so every reliability test draws from one generator.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from fracturescan.errors import FracturescanError, ImageReadError, UnsupportedImageError

from ..real_samples import JPEG_LOSSLESS, pydicom_data_path

LUMA = np.array([0.299, 0.587, 0.114])
CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"
RT_PLAN_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.5"
US_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
#: The explicit-VR little-endian UID and a same-length UID no standard defines.
EXPLICIT_LE = b"1.2.840.10008.1.2.1"
UNKNOWN_TS = b"1.2.840.99999.9.9.9"


@dataclass(frozen=True)
class Reads:
    """The file must decode; ``check`` (pixels -> bool) states what the pixels must satisfy."""

    shape: tuple[int, int] | None = None
    check: Callable[[np.ndarray], bool] | None = None
    why: str = ""


@dataclass(frozen=True)
class Fails:
    """The file must be refused with ``exc`` (exactly that class) and ``phrase`` in the message."""

    exc: type[FracturescanError]
    phrase: str


@dataclass(frozen=True)
class BadInput:
    """One catalogue entry.

    ``build(folder)`` writes the input under ``folder`` and returns the path to give the reader.
    ``file_level`` is False for problems of the path itself (directory, symlink loop, missing
    file), which a batch tool may legitimately treat as a usage error rather than a bad image.
    ``needs`` names what must be available ("pydicom", "sample", "non-root") or is None.
    """

    name: str
    build: Callable[[Path], Path]
    expect: Reads | Fails
    file_level: bool = True
    needs: str | None = None


# --------------------------------------------------------------------------- byte builders


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A ~100-byte PNG declaring width x height 8-bit gray pixels (IDAT is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + _png_chunk(b"IEND", b""))


def bomb_jpeg(width: int = 40_000, height: int = 40_000) -> bytes:
    """A real small JPEG whose SOF0 frame header is edited to declare width x height."""
    data = bytearray(_encode(gradient(16, 16), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    # SOF0 layout: marker(2) length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gradient(height: int, width: int, dtype: type = np.uint8) -> np.ndarray:
    """A diagonal gradient spanning the dtype's full range (so min-max results are known)."""
    top = np.iinfo(dtype).max
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.float64)
    return np.rint(ramp / max(ramp.max(), 1) * top).astype(dtype)


def _encode(img: np.ndarray | Image.Image, fmt: str, **kwargs: object) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def seed_png() -> bytes:
    """Valid 8-bit grayscale PNG used as a fuzz seed."""
    return _encode(gradient(24, 32), "PNG")


def seed_jpeg() -> bytes:
    """Valid RGB JPEG used as a fuzz seed."""
    rgb = np.stack([gradient(24, 32), gradient(24, 32)[::-1], np.full((24, 32), 90, np.uint8)], -1)
    return _encode(rgb, "JPEG", quality=85)


def dicom_dataset(pixels: np.ndarray | None, photometric: str = "MONOCHROME2", **attrs: object):
    """A minimal uncompressed DICOM dataset (CR unless ``attrs`` say otherwise)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # A fixed instance UID keeps the bytes a pure function of the arguments (hypothesis needs it).
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CR_SOP_CLASS, "2.25.4242", "CR"
    if pixels is not None:
        colour = photometric == "RGB"
        shape = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
        ds.SamplesPerPixel = 3 if colour else 1
        if colour:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        ds.PixelData = pixels.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def dicom_bytes(ds) -> bytes:
    """Serialise a dataset as a standard Part 10 file (preamble + ``DICM``)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def seed_dicom() -> bytes:
    """Valid 16-bit CR DICOM with a window, used as a fuzz seed."""
    return dicom_bytes(dicom_dataset(gradient(16, 20, np.uint16), WindowCenter=30000,
                                     WindowWidth=40000))


def _write(name: str, make: Callable[[], bytes]) -> Callable[[Path], Path]:
    """A builder writing ``make()`` to ``folder/name``."""

    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(make())
        return path

    return build


def _cut(make: Callable[[], bytes], keep: float | int) -> Callable[[], bytes]:
    """Keep the first ``keep`` bytes (int) or that fraction of the file (float)."""

    def cut() -> bytes:
        data = make()
        return data[: keep if isinstance(keep, int) else int(len(data) * keep)]

    return cut


# --------------------------------------------------------------------------- PNG/JPEG/TIFF


def _rgba() -> bytes:
    arr = np.zeros((8, 10, 4), np.uint8)
    arr[:, :5] = (255, 255, 255, 255)  # opaque white
    arr[:, 5:] = (255, 255, 255, 0)  # transparent white: must become black, not white
    return _encode(Image.fromarray(arr, "RGBA"), "PNG")


def _la() -> bytes:
    arr = np.zeros((8, 10, 2), np.uint8)
    arr[:, :5] = (200, 255)
    arr[:, 5:] = (200, 0)
    return _encode(Image.fromarray(arr, "LA"), "PNG")


def _palette() -> bytes:
    img = Image.new("P", (10, 6))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 5, 6))  # left half red, right half black
    return _encode(img, "PNG")


def _cmyk() -> bytes:
    arr = np.zeros((8, 16, 4), np.uint8)
    arr[:, 8:, 3] = 255  # right half full black ink, left half bare paper (white)
    return _encode(Image.fromarray(arr, "CMYK"), "JPEG", quality=95)


def _exif_rotated() -> bytes:
    arr = np.zeros((20, 40), np.uint8)
    arr[:, 20:] = 255  # stored: left black, right white; orientation 6 = rotate 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(arr, "JPEG", quality=95, exif=exif.tobytes())


def _float_tiff(value: float) -> Callable[[], bytes]:
    def make() -> bytes:
        arr = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
        arr[2, 3] = value
        return _encode(Image.fromarray(arr, "F"), "TIFF")

    return make


def _bad_crc(chunk: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        data = bytearray(seed_png())
        at = data.index(chunk)
        length = struct.unpack(">I", data[at - 4 : at])[0]
        data[at + 4 + length] ^= 0xFF  # first byte of the chunk's CRC
        return bytes(data)

    return make


def _flip_idat() -> bytes:
    data = bytearray(seed_png())
    data[data.index(b"IDAT") + 10] ^= 0xFF  # inside the zlib stream
    return bytes(data)


def _jpeg_plus_garbage() -> bytes:
    return seed_jpeg() + bytes(range(256)) * 8


def _zero_width_png() -> bytes:
    return bomb_png(0, 10)


# --------------------------------------------------------------------------- DICOM


def _dcm(make_ds: Callable[[], object]) -> Callable[[], bytes]:
    return lambda: dicom_bytes(make_ds())


def _no_pixels_cr():
    return dicom_dataset(None)


def _rt_plan():
    return dicom_dataset(None, SOPClassUID=RT_PLAN_SOP_CLASS, Modality="RTPLAN",
                         RTPlanLabel="PLAN1")


def _multiframe():
    frames = np.stack([gradient(12, 16, np.uint16), np.zeros((12, 16), np.uint16),
                       np.full((12, 16), 65535, np.uint16)])
    return dicom_dataset(frames, NumberOfFrames=3)


def _rgb_us():
    rgb = np.stack([gradient(20, 30), gradient(20, 30)[:, ::-1], np.full((20, 30), 60, np.uint8)], -1)
    return dicom_dataset(rgb, "RGB", SOPClassUID=US_SOP_CLASS, Modality="US")


def _monochrome1():
    return dicom_dataset(gradient(10, 12, np.uint16), "MONOCHROME1")


#: Raw stored values, slope/intercept and window of the rescale entry (checked independently).
RESCALE_RAW = gradient(16, 16, np.uint16) // 16  # 0..4095
RESCALE = dict(RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1000, WindowWidth=4001)


def _rescale_expected() -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window applied to slope*raw+intercept, in [0, 1]."""
    values = RESCALE_RAW.astype(np.float64) * RESCALE["RescaleSlope"] + RESCALE["RescaleIntercept"]
    c, w = RESCALE["WindowCenter"], RESCALE["WindowWidth"]
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def _rescaled():
    ds = dicom_dataset(RESCALE_RAW, **RESCALE)
    ds.BitsStored, ds.HighBit = 12, 11
    return ds


def _size_mismatch():
    ds = dicom_dataset(np.zeros((10, 10), np.uint16))
    ds.Rows, ds.Columns = 100, 100
    return ds


def _dicom_bomb():
    ds = dicom_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = 40_000  # Rows/Columns are 16-bit in DICOM: 40,000 still fits
    return ds


def _zero_rows():
    ds = dicom_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = 0
    return ds


def _unknown_syntax() -> bytes:
    data = dicom_bytes(dicom_dataset(gradient(8, 8, np.uint16)))
    assert data.count(EXPLICIT_LE) == 1
    return data.replace(EXPLICIT_LE, UNKNOWN_TS)


def _no_preamble() -> bytes:
    ds = dicom_dataset(gradient(8, 8, np.uint16))
    del ds.file_meta
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()


def _jpeg_lossless_sample(folder: Path) -> Path:
    path = pydicom_data_path(JPEG_LOSSLESS)
    assert path is not None, "missing_requirement skips this entry when pydicom-data is absent"
    return path


def _jpeg_lossless_expectation() -> Reads | Fails:
    """Unsupported unless a JPEG Lossless decoder plugin is installed here."""
    try:
        from pydicom.pixels import get_decoder
        from pydicom.uid import JPEGLosslessSV1

        available = get_decoder(JPEGLosslessSV1).is_available
    except Exception:  # pydicom missing: the entry is skipped anyway
        available = False
    return Reads() if available else Fails(UnsupportedImageError, "no installed decoder")


# --------------------------------------------------------------------------- path problems


def _directory(folder: Path) -> Path:
    path = folder / "folder.png"
    path.mkdir()
    return path


def _symlink_loop(folder: Path) -> Path:
    a, b = folder / "loop_a.png", folder / "loop_b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _unreadable(folder: Path) -> Path:
    path = folder / "locked.png"
    path.write_bytes(seed_png())
    path.chmod(0)
    return path


def _half(arr: np.ndarray, left: bool) -> np.ndarray:
    w = arr.shape[1] // 2
    return arr[:, :w] if left else arr[:, w:]


def _close(a: np.ndarray, b: np.ndarray | float, tol: float = 1e-6) -> bool:
    return bool(np.allclose(a, b, atol=tol, rtol=0))


HTML = b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n"
TEXT = b"Patient X-ray report: no fracture seen.\n" * 5
GRAD8 = gradient(24, 32) / 255.0

CATALOGUE: tuple[BadInput, ...] = (
    # ---- not images at all
    BadInput("empty.png", _write("empty.png", lambda: b""), Fails(ImageReadError, "is empty")),
    BadInput("text_as.png", _write("notes.png", lambda: TEXT),
             Fails(UnsupportedImageError, "not a recognised image")),
    BadInput("html_as.jpg", _write("page.jpg", lambda: HTML),
             Fails(UnsupportedImageError, "not a recognised image")),
    BadInput("html_as.dcm", _write("page.dcm", lambda: HTML),
             Fails(UnsupportedImageError, "not a DICOM file"), needs="pydicom"),
    BadInput("text_as.dcm", _write("notes.dcm", lambda: TEXT),
             Fails(UnsupportedImageError, "not a DICOM file"), needs="pydicom"),
    BadInput("zeros_as.png", _write("zeros.png", lambda: bytes(4096)),
             Fails(UnsupportedImageError, "not a recognised image")),
    BadInput("gif_as.png", _write("anim.png", lambda: _encode(gradient(8, 8), "GIF")),
             Fails(UnsupportedImageError, "not a recognised image")),
    # ---- truncated / corrupt rasters
    BadInput("png_cut_signature", _write("cut8.png", _cut(seed_png, 8)),
             Fails(ImageReadError, "no IHDR header")),
    BadInput("png_cut_after_ihdr", _write("cut33.png", _cut(seed_png, 33)),
             Fails(ImageReadError, "corrupt or truncated PNG")),
    BadInput("png_cut_half", _write("cut50.png", _cut(seed_png, 0.5)),
             Fails(ImageReadError, "corrupt or truncated PNG")),
    # Every pixel is present, only the IEND trailer is missing: reading it is correct.
    BadInput("png_no_iend", _write("cut_iend.png", _cut(seed_png, -12)),
             Reads((24, 32), lambda a: _close(a, GRAD8), "complete pixels")),
    BadInput("jpeg_cut_marker", _write("cut3.jpg", _cut(seed_jpeg, 3)),
             Fails(ImageReadError, "corrupt or truncated JPEG")),
    BadInput("jpeg_cut_header", _write("cut40.jpg", _cut(seed_jpeg, 40)),
             Fails(ImageReadError, "corrupt or truncated JPEG")),
    BadInput("jpeg_cut_half", _write("cut50.jpg", _cut(seed_jpeg, 0.5)),
             Fails(ImageReadError, "corrupt or truncated JPEG")),
    BadInput("jpeg_cut_90pc", _write("cut90.jpg", _cut(seed_jpeg, 0.9)),
             Fails(ImageReadError, "corrupt or truncated JPEG")),
    BadInput("png_bad_ihdr_crc", _write("crc.png", _bad_crc(b"IHDR")),
             Fails(ImageReadError, "corrupt or truncated PNG")),
    # Pillow ignores IDAT CRCs, but zlib's own Adler-32 still catches damaged pixel data.
    BadInput("png_bad_idat_crc", _write("crc_idat.png", _bad_crc(b"IDAT")),
             Reads((24, 32), lambda a: _close(a, GRAD8), "data intact")),
    BadInput("png_corrupt_idat", _write("bad_idat.png", _flip_idat),
             Fails(ImageReadError, "corrupt or truncated PNG")),
    BadInput("png_zero_width", _write("zero.png", _zero_width_png),
             Fails(ImageReadError, "declares an empty image")),
    BadInput("png_bomb_40k", _write("bomb.png", bomb_png), Fails(ImageReadError, "too large")),
    BadInput("jpeg_bomb_40k", _write("bomb.jpg", bomb_jpeg), Fails(ImageReadError, "too large")),
    # Found by the fuzz test: a 700-byte JPEG declaring 26 Mpx, which libjpeg pads with gray.
    BadInput("jpeg_dims_inflated", _write("inflated.jpg", lambda: bomb_jpeg(8757, 2965)),
             Fails(ImageReadError, "declares 25,964,505 pixels")),
    BadInput("float_tiff_nan", _write("nan.tif", _float_tiff(float("nan"))),
             Fails(ImageReadError, "NaN or infinite")),
    BadInput("float_tiff_inf", _write("inf.tif", _float_tiff(float("inf"))),
             Fails(ImageReadError, "NaN or infinite")),
    # ---- unusual but valid rasters
    BadInput("jpeg_garbage_appended", _write("tail.jpg", _jpeg_plus_garbage),
             Reads((24, 32), lambda a: _close(a, read_bytes(seed_jpeg())), "same as without tail")),
    BadInput("png_16bit", _write("deep.png", lambda: _encode(gradient(12, 20, np.uint16), "PNG")),
             Reads((12, 20), lambda a: _close(a, gradient(12, 20, np.uint16) / 65535.0),
                   "value/65535, full precision")),
    BadInput("png_rgba", _write("rgba.png", _rgba),
             Reads((8, 10), lambda a: _close(_half(a, True), 1.0) and _close(_half(a, False), 0.0),
                   "transparent -> black")),
    BadInput("png_la", _write("la.png", _la),
             Reads((8, 10), lambda a: _close(_half(a, True), 200 / 255) and _close(_half(a, False), 0),
                   "gray x alpha")),
    BadInput("png_palette", _write("pal.png", _palette),
             Reads((6, 10), lambda a: _close(_half(a, True), 0.299, 1e-3) and _close(_half(a, False), 0),
                   "red -> 0.299 luma")),
    BadInput("jpeg_cmyk", _write("cmyk.jpg", _cmyk),
             Reads((8, 16), lambda a: a[:, :6].min() > 0.9 and a[:, 10:].max() < 0.1,
                   "paper white, black ink black")),
    BadInput("jpeg_exif_rotated", _write("exif.jpg", _exif_rotated),
             Reads((40, 20), lambda a: a[:16].max() < 0.1 and a[24:].min() > 0.9,
                   "orientation 6 applied: top black, bottom white")),
    BadInput("png_1x1", _write("one.png", lambda: _encode(np.full((1, 1), 51, np.uint8), "PNG")),
             Reads((1, 1), lambda a: _close(a, 0.2), "51/255")),
    BadInput("png_10x10000", _write("wide.png", lambda: _encode(gradient(10, 10_000), "PNG")),
             Reads((10, 10_000), lambda a: _close(a, gradient(10, 10_000) / 255.0), "exact")),
    BadInput("png_10000x10", _write("tall.png", lambda: _encode(gradient(10_000, 10), "PNG")),
             Reads((10_000, 10), lambda a: _close(a, gradient(10_000, 10) / 255.0), "exact")),
    BadInput("png_all_black", _write("black.png", lambda: _encode(np.zeros((16, 16), np.uint8), "PNG")),
             Reads((16, 16), lambda a: bool((a == 0).all()), "all 0")),
    BadInput("png_all_white", _write("white.png", lambda: _encode(np.full((16, 16), 255, np.uint8), "PNG")),
             Reads((16, 16), lambda a: bool((a == 1).all()), "all 1")),
    BadInput("jpeg_named_png", _write("really_jpeg.png", seed_jpeg), Reads((24, 32))),
    # ---- DICOM
    BadInput("dicom_no_pixels", _write("nopix.dcm", _dcm(_no_pixels_cr)),
             Fails(ImageReadError, "no pixel data"), needs="pydicom"),
    BadInput("dicom_rt_plan", _write("plan.dcm", _dcm(_rt_plan)),
             Fails(ImageReadError, "RT Plan"), needs="pydicom"),
    BadInput("dicom_jpeg_lossless_real", _jpeg_lossless_sample, _jpeg_lossless_expectation(),
             needs="sample"),
    BadInput("dicom_unknown_syntax", _write("unknown_ts.dcm", _unknown_syntax),
             Fails(UnsupportedImageError, "not a DICOM transfer syntax"), needs="pydicom"),
    BadInput("dicom_size_mismatch", _write("mismatch.dcm", _dcm(_size_mismatch)),
             Fails(ImageReadError, "pixel data holds"), needs="pydicom"),
    BadInput("dicom_bomb_40k", _write("bomb.dcm", _dcm(_dicom_bomb)),
             Fails(ImageReadError, "too large"), needs="pydicom"),
    BadInput("dicom_zero_rows", _write("zero.dcm", _dcm(_zero_rows)),
             Fails(ImageReadError, "empty image"), needs="pydicom"),
    BadInput("dicom_cut_half", _write("cut.dcm", _cut(seed_dicom, 0.5)),
             Fails(ImageReadError, "truncated"), needs="pydicom"),
    BadInput("dicom_multiframe", _write("multi.dcm", _dcm(_multiframe)),
             Reads((12, 16), lambda a: _close(a, gradient(12, 16, np.uint16) / 65535.0),
                   "first frame, min-max"), needs="pydicom"),
    BadInput("dicom_rgb_us", _write("us.dcm", _dcm(_rgb_us)),
             Reads((20, 30), lambda a: _close(a, (np.stack([gradient(20, 30), gradient(20, 30)[:, ::-1],
                                                            np.full((20, 30), 60)], -1) @ LUMA) / 255,
                                              1e-5), "ITU-R 601 luma"), needs="pydicom"),
    BadInput("dicom_monochrome1", _write("mono1.dcm", _dcm(_monochrome1)),
             Reads((10, 12), lambda a: _close(a, 1.0 - gradient(10, 12, np.uint16) / 65535.0),
                   "inverted"), needs="pydicom"),
    BadInput("dicom_16bit_rescale", _write("rescale.dcm", _dcm(_rescaled)),
             Reads((16, 16), lambda a: _close(a, _rescale_expected(), 1e-5), "slope/intercept + window"),
             needs="pydicom"),
    BadInput("dicom_no_preamble", _write("bare.dcm", _no_preamble),
             Reads((8, 8), lambda a: _close(a, gradient(8, 8, np.uint16) / 65535.0), "min-max"),
             needs="pydicom"),
    # ---- the path itself
    BadInput("directory", _directory, Fails(ImageReadError, "is a directory"), file_level=False),
    BadInput("symlink_loop", _symlink_loop, Fails(ImageReadError, "cannot be read"), file_level=False),
    BadInput("missing_file", lambda folder: folder / "gone.png", Fails(ImageReadError, "does not exist"),
             file_level=False),
    BadInput("unreadable_permission", _unreadable, Fails(ImageReadError, "cannot be read"),
             file_level=False, needs="non-root"),
)


def read_bytes(data: bytes) -> np.ndarray:
    """read_image on bytes (imported late so this module loads without side effects)."""
    from fracturescan.data.images import read_image

    return read_image(data)


def missing_requirement(entry: BadInput) -> str | None:
    """Why ``entry`` cannot run on this machine, or None when it can."""
    if entry.needs == "pydicom" or entry.needs == "sample":
        try:
            import pydicom  # noqa: F401
        except ImportError:
            return "pydicom is not installed"
    if entry.needs == "sample" and pydicom_data_path(JPEG_LOSSLESS) is None:
        return f"real sample {JPEG_LOSSLESS} needs the pydicom-data package (pip install -e '.[dev]')"
    if entry.needs == "non-root" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "running as root: file permissions do not stop root, so the test is meaningless"
    return None
