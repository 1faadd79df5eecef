"""Fuzzing the one image reader: mutated PNG, JPEG and DICOM seeds through ``read_image``.

Property: every input either decodes to a finite float32 (H, W) image in [0, 1] or raises a
documented :class:`FracturescanError` subclass, within a per-input time limit (no hang).

Counts: ``FRACTURESCAN_FUZZ_EXAMPLES`` (default 300, a few seconds) for the always-on test; the
``slow`` test runs 10,000 inputs when ``FRACTURESCAN_FUZZ_LONG=1`` (skipped otherwise, because
the slow marker also runs in CI).
"""

from __future__ import annotations

import os
import signal
import struct
import time
import zlib
from collections import Counter

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("pydicom")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fracturescan.data.images import read_image  # noqa: E402
from fracturescan.errors import ImageReadError, UnsupportedImageError  # noqa: E402

from .bad_inputs import dicom_bytes, dicom_dataset, gradient, seed_dicom, seed_jpeg, seed_png  # noqa: E402

#: Seconds one input may take; a healthy read of these ~1 KB files takes milliseconds.
TIME_LIMIT_S = 2.0
#: What the reader documents it raises on bad content (MissingExtraError needs pydicom absent).
DOCUMENTED = (ImageReadError, UnsupportedImageError)
CI_EXAMPLES = int(os.environ.get("FRACTURESCAN_FUZZ_EXAMPLES", "300"))
LONG_EXAMPLES = 10_000
SEEDS = {"png": seed_png(), "jpeg": seed_jpeg(), "dicom": seed_dicom()}
NAMES = {"png": "fuzz.png", "jpeg": "fuzz.jpg", "dicom": "fuzz.dcm"}
#: Outcomes of the current session, printed by the long run (``-s``) for the report.
OUTCOMES: Counter[str] = Counter()


class Hang(BaseException):
    """Raised by SIGALRM. A BaseException so the reader's ``except Exception`` cannot swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang


# --------------------------------------------------------------------------- strategies


@st.composite
def _byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """1-5 flips, overwrites, insertions, deletions or a truncation; biased toward the header,
    where a single byte changes how everything after it is interpreted."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 5))):
        if not out:
            break
        pos = draw(st.one_of(st.integers(0, min(len(out) - 1, 400)), st.integers(0, len(out) - 1)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 64))]
        else:
            del out[pos:]
    return bytes(out)


@st.composite
def _png_header_edit(draw: st.DrawFn) -> bytes:
    """Rewrite IHDR (size, bit depth, colour type, interlace), with a valid CRC or not."""
    data = bytearray(SEEDS["png"])
    width = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))
    height = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    interlace = draw(st.sampled_from([0, 1, 2]))
    data[16:29] = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    if draw(st.booleans()):
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@st.composite
def _jpeg_header_edit(draw: st.DrawFn) -> bytes:
    """Rewrite the SOF0 frame header: precision, height, width, component count."""
    data = bytearray(SEEDS["jpeg"])
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = draw(st.sampled_from([8, 12, 16, 0, 255]))
    data[sof + 5 : sof + 9] = struct.pack(">HH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    data[sof + 9] = draw(st.sampled_from([1, 3, 4, 0, 2, 255]))
    return bytes(data)


_PHOTOMETRIC = ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
                "CMYK", "", "GARBAGE"]


@st.composite
def _dicom_field_edit(draw: st.DrawFn) -> bytes:
    """A DICOM whose image-describing attributes contradict each other or the pixel data."""
    pixels = gradient(draw(st.integers(1, 12)), draw(st.integers(1, 12)), np.uint16)
    ds = dicom_dataset(pixels)
    fields = {
        "Rows": st.integers(0, 65535), "Columns": st.integers(0, 65535),
        "BitsAllocated": st.sampled_from([1, 8, 12, 16, 32, 64, 0, 7]),
        "BitsStored": st.integers(0, 64), "HighBit": st.integers(0, 64),
        "SamplesPerPixel": st.sampled_from([1, 3, 4, 0]),
        "PhotometricInterpretation": st.sampled_from(_PHOTOMETRIC),
        "PixelRepresentation": st.sampled_from([0, 1, 2]),
        "PlanarConfiguration": st.sampled_from([0, 1, 2]),
        "NumberOfFrames": st.sampled_from(["1", "2", "0", "-1", "100000"]),
        "RescaleSlope": st.sampled_from(["1", "0", "-1", "1e308", "2.5"]),
        "RescaleIntercept": st.sampled_from(["0", "-1024", "1e308"]),
        "WindowCenter": st.sampled_from(["0", "100", "-5", "1e30"]),
        "WindowWidth": st.sampled_from(["1", "0", "-10", "4000", "1e-30"]),
    }
    for key in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=5, unique=True)):
        setattr(ds, key, draw(fields[key]))
    if draw(st.booleans()):
        ds.PixelData = draw(st.binary(min_size=0, max_size=600))
    try:
        data = dicom_bytes(ds)
    except Exception:  # pydicom refused to WRITE this combination: not the reader's problem
        hypothesis.assume(False)
    return draw(_byte_mutations(data)) if draw(st.booleans()) else data


def _inputs() -> st.SearchStrategy[tuple[str, bytes]]:
    plain = st.sampled_from(sorted(SEEDS)).flatmap(
        lambda kind: _byte_mutations(SEEDS[kind]).map(lambda data: (kind, data)))
    return st.one_of(
        plain,
        _png_header_edit().map(lambda data: ("png", data)),
        _jpeg_header_edit().map(lambda data: ("jpeg", data)),
        _dicom_field_edit().map(lambda data: ("dicom", data)),
    )


# --------------------------------------------------------------------------- the property


def _check_one(kind: str, data: bytes) -> None:
    """Read ``data`` under a wall-clock alarm; only documented outcomes are allowed."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    start = time.perf_counter()
    try:
        image = read_image(data, name=NAMES[kind])
    except DOCUMENTED as exc:
        assert NAMES[kind] in str(exc)  # the message names the file
        OUTCOMES[f"{kind}: {type(exc).__name__}"] += 1
        return
    except Hang:
        pytest.fail(f"read_image hung for > {TIME_LIMIT_S} s on a {len(data)}-byte {kind} input")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < TIME_LIMIT_S
    assert image.dtype == np.float32 and image.ndim == 2 and image.size > 0
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    OUTCOMES[f"{kind}: reads"] += 1


def _fuzz(examples: int):
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(_inputs())
    def run(case: tuple[str, bytes]) -> None:
        _check_one(*case)

    return run


@pytest.mark.filterwarnings("ignore")  # pydicom warns about every oddity it tolerates
def test_fuzz_reader_ci() -> None:
    OUTCOMES.clear()
    _fuzz(CI_EXAMPLES)()
    # The generator must reach both outcomes, else it only tests the first bytes of a file.
    assert sum(v for k, v in OUTCOMES.items() if k.endswith("reads")) > 0
    assert sum(v for k, v in OUTCOMES.items() if not k.endswith("reads")) > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.skipif(os.environ.get("FRACTURESCAN_FUZZ_LONG") != "1",
                    reason="set FRACTURESCAN_FUZZ_LONG=1 to run 10,000 fuzzed inputs (~25 s)")
def test_fuzz_reader_long() -> None:
    OUTCOMES.clear()
    start = time.perf_counter()
    _fuzz(LONG_EXAMPLES)()
    total = sum(OUTCOMES.values())
    print(f"\nfuzzed {total} inputs in {time.perf_counter() - start:.1f} s: {dict(sorted(OUTCOMES.items()))}")
    assert total >= LONG_EXAMPLES * 0.95  # hypothesis may discard a few generated cases
