"""Tests of DICOM reading: real files (tests/samples/ and pydicom-data) and datasets built in code."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from fracturescan.data.dicom import read_dicom  # noqa: E402
from fracturescan.data.dicom_dataset import dicom_metadata_safe, load_dataset  # noqa: E402
from fracturescan.data.images import read_image  # noqa: E402
from fracturescan.errors import (  # noqa: E402
    ImageReadError,
    MissingExtraError,
    UnsupportedImageError,
)

from ..real_samples import hand, jpeg_lossless, tibia  # noqa: E402

CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"
LUMA = np.array([0.299, 0.587, 0.114])


def _linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window, written out independently, output in [0, 1]."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _make_ds(
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attrs: object,
) -> Dataset:
    """A minimal CR dataset holding ``pixels`` uncompressed (or no pixels when None)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    if pixels is not None:
        frames_shape = pixels.shape
        color = photometric == "RGB"
        ds.Rows, ds.Columns = frames_shape[-3:-1] if color else frames_shape[-2:]
        ds.SamplesPerPixel = 3 if color else 1
        if color:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        ds.PixelData = pixels.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- real samples


def test_real_hand_decodes_bone_bright() -> None:
    path = hand()
    out = read_image(path)
    assert out.shape == (2500, 2048) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    # MONOCHROME2 with window 2048/4096: display follows the stored values (no inversion).
    np.testing.assert_allclose(out, _linear_window(raw, 2048, 4096), atol=1e-5)
    wrist_bones = out[1860:2110, 920:1330].mean()  # carpal bones, seen on the saved preview
    soft_background = out[830:1250, 1800:2000].mean()  # beside the little finger
    assert wrist_bones > soft_background + 0.2


def test_real_tibia_monochrome1_inverted() -> None:
    path = tibia()
    out = read_image(path)
    assert out.shape == (1760, 1760)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert np.corrcoef(out.ravel(), raw.ravel())[0, 1] < -0.99
    np.testing.assert_allclose(out, 1.0 - _linear_window(raw, 550, 1024), atol=1e-5)
    tibia_shaft = out[300:900, 800:1000].mean()
    air_beside_leg = out[300:900, 480:560].mean()
    assert tibia_shaft > air_beside_leg + 0.3


def test_real_jpeg_lossless_decodes_with_gdcm() -> None:
    """JPEG Lossless (common in CR archives) decodes once python-gdcm is installed (the dicom
    extra has it): the output follows the raw pixel values (MONOCHROME2: no inversion)."""
    pytest.importorskip("gdcm")
    path = jpeg_lossless()
    out = read_image(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert out.shape == raw.shape == (1024, 256) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.05
    assert np.corrcoef(out.ravel(), raw.ravel())[0, 1] > 0.99


def test_missing_decoder_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a decoder plugin for the codec, the error names the file, the codec, the plugins
    to install and the PNG way out."""
    import pydicom.pixels

    class _Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: _Unavailable())
    path = jpeg_lossless()
    with pytest.raises(UnsupportedImageError) as info:
        read_image(path)
    msg = str(info.value)
    assert path.name in msg and "JPEG Lossless" in msg
    assert "1.2.840.10008.1.2.4.70" in msg and "python-gdcm" in msg and "PNG" in msg


def test_real_metadata_is_technical_only() -> None:
    ds = load_dataset(hand(), pixels=False)
    meta = dicom_metadata_safe(ds)
    assert meta["modality"] == "CR" and meta["rows"] == 2500 and meta["columns"] == 2048
    assert meta["bits_stored"] == 12 and meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"


# --------------------------------------------------------------------------- synthetic datasets


def test_monochrome1_min_max_inverted(tmp_path: Path) -> None:
    pixels = np.arange(0, 4000, 100, dtype=np.uint16).reshape(5, 8)
    path = _write(_make_ds(pixels, "MONOCHROME1", bits_stored=12), tmp_path / "m1.dcm")
    out = read_image(path)
    expected = 1.0 - (pixels - 0.0) / 3900.0  # no window: min-max, then inverted
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_signed_rescale_and_window(tmp_path: Path) -> None:
    stored = np.array([[-2000, -600, -500, 0], [100, 512, 1000, 3000]], dtype=np.int16)
    ds = _make_ds(
        stored, bits_stored=16, RescaleSlope=2, RescaleIntercept=-1024,
        WindowCenter=0, WindowWidth=2001,
    )
    out = read_image(_write(ds, tmp_path / "ct_like.dcm"))
    physical = stored.astype(np.float64) * 2 - 1024  # Modality LUT, by hand
    np.testing.assert_allclose(out, _linear_window(physical, 0, 2001), atol=1e-6)
    assert out[0, 0] == 0.0 and out[1, 3] == 1.0 and 0.0 < out[1, 0] < 1.0


def test_voi_lut_sequence(tmp_path: Path) -> None:
    pixels = np.array([[0, 5, 10, 20], [40, 63, 64, 100]], dtype=np.uint16)
    lut = [int(v) for v in (np.linspace(0, 1, 64) ** 2 * 200 + 10).round()]
    item = Dataset()
    item.add_new(0x00283002, "US", [64, 0, 8])  # LUTDescriptor: ambiguous VR, set explicitly
    item.add_new(0x00283006, "US", lut)  # LUTData
    ds = _make_ds(pixels, bits_stored=8, VOILUTSequence=Sequence([item]))
    out = read_image(_write(ds, tmp_path / "lut.dcm"))
    mapped = np.asarray(lut, dtype=float)[np.clip(pixels, 0, 63)]
    np.testing.assert_allclose(out, (mapped - min(lut)) / (max(lut) - min(lut)), atol=1e-6)


def test_multiframe_uses_first_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = np.stack([np.full((4, 6), v, dtype=np.uint16) for v in (100, 900, 500)])
    frames[0, 0, 0] = 300  # frame 0 is not constant, so min-max is well defined
    ds = _make_ds(frames, bits_stored=12, NumberOfFrames=3)
    with caplog.at_level(logging.WARNING, logger="fracturescan.data.dicom"):
        out = read_image(_write(ds, tmp_path / "multi.dcm"))
    expected = (frames[0] - 100.0) / 200.0
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert any("3 frames" in r.getMessage() and "multi.dcm" in r.getMessage()
               for r in caplog.records)


def test_rgb_dicom_luminance(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    out = read_image(_write(_make_ds(rgb, "RGB"), tmp_path / "rgb.dcm"))
    np.testing.assert_allclose(out, (rgb @ LUMA) / 255.0, atol=1e-6)


def test_no_pixel_data_names_modality(tmp_path: Path) -> None:
    ds = _make_ds(None, Modality="SR")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    with pytest.raises(ImageReadError) as info:
        read_image(_write(ds, tmp_path / "report.dcm"))
    msg = str(info.value)
    assert "report.dcm" in msg and "contains no image" in msg and "SR" in msg
    assert "Basic Text SR" in msg


def test_size_mismatch(tmp_path: Path) -> None:
    ds = _make_ds(np.zeros((10, 10), dtype=np.uint16))
    ds.PixelData = np.zeros((10, 5), dtype=np.uint16).tobytes()  # half of what is declared
    with pytest.raises(ImageReadError) as info:
        read_image(_write(ds, tmp_path / "short.dcm"))
    msg = str(info.value)
    assert "short.dcm" in msg and "10x10" in msg and "200" in msg and "100" in msg


def test_too_many_pixels_checked_before_decoding(tmp_path: Path) -> None:
    ds = _make_ds(np.zeros((2, 2), dtype=np.uint16))
    ds.Rows, ds.Columns = 20_000, 30_000  # pixel data is tiny: decoding would fail instead
    with pytest.raises(ImageReadError) as info:
        read_image(_write(ds, tmp_path / "huge.dcm"), max_pixels=1_000_000)
    msg = str(info.value)
    assert "huge.dcm" in msg and "30000x20000" in msg and "1,000,000" in msg


def test_no_preamble_only_with_dcm_name(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    ds = _make_ds(pixels, bits_stored=12)
    del ds.file_meta  # written as a bare data set: no preamble, no 'DICM'
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    data = buf.getvalue()
    assert data[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(data, name="bare.dcm"), pixels / 4000.0, atol=1e-6)
    with pytest.raises(UnsupportedImageError, match=r"bare\.bin"):
        read_image(data, name="bare.bin")


def test_truncated_dicom(tmp_path: Path) -> None:
    ds = _make_ds(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    data = (_write(ds, tmp_path / "full.dcm")).read_bytes()
    with pytest.raises(ImageReadError, match=r"cut\.dcm"):
        read_image(data[: len(data) - 3000], name="cut.dcm")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's own 'end of file' warning
@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_real_compressed_file(keep: float) -> None:
    data = hand().read_bytes()
    with pytest.raises(ImageReadError) as info:
        read_image(data[: int(len(data) * keep)], name="upload.dcm")
    assert "upload.dcm" in str(info.value) and "truncated" in str(info.value)


def test_metadata_excludes_identifying_tags() -> None:
    ds = _make_ds(
        np.zeros((3, 4), dtype=np.uint16),
        PatientName="Doe^Jane", PatientID="PID-12345", PatientBirthDate="19700101",
        AccessionNumber="ACC-999", InstitutionName="Saint Example Hospital",
        ReferringPhysicianName="Who^Doctor", BodyPartExamined="WRIST", ViewPosition="PA",
    )
    meta = dicom_metadata_safe(ds)
    assert set(meta) == {
        "modality", "body_part_examined", "photometric_interpretation", "rows", "columns",
        "bits_stored", "view_position", "transfer_syntax", "transfer_syntax_name",
    }
    assert meta["body_part_examined"] == "WRIST" and meta["view_position"] == "PA"
    assert meta["rows"] == 3 and meta["columns"] == 4 and meta["bits_stored"] == 16
    dumped = repr(meta)
    for secret in ("Doe", "Jane", "PID-12345", "19700101", "ACC-999", "Saint", "Who"):
        assert secret not in dumped


def test_missing_pydicom_gives_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(_make_ds(np.zeros((2, 2), dtype=np.uint16)), tmp_path / "x.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes 'import pydicom' fail
    with pytest.raises(MissingExtraError, match=r"pydicom.*fracturescan\[dicom\]"):
        read_image(path)


def test_read_dicom_accepts_path_and_bytes(tmp_path: Path) -> None:
    pixels = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    path = _write(_make_ds(pixels, bits_stored=8), tmp_path / "pb.dcm")
    expected = (pixels - 10.0) / 40.0
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)
    np.testing.assert_allclose(read_dicom(path.read_bytes(), name="pb"), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_dicom_only_raises_documented_errors() -> None:
    """Property: random header/pixel damage gives a valid image or an ImageReadError."""
    ds = _make_ds(
        np.arange(32 * 32, dtype=np.uint16).reshape(32, 32),
        WindowCenter=500, WindowWidth=800, RescaleSlope=1, RescaleIntercept=0,
    )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    original = buf.getvalue()
    rng = np.random.default_rng(11)
    errors = 0
    for _ in range(150):
        damaged = bytearray(original)
        for pos in rng.integers(128, len(damaged), size=int(rng.integers(1, 6))):
            damaged[pos] = int(rng.integers(0, 256))
        try:
            out = read_image(bytes(damaged), name="damaged.dcm")
        except ImageReadError as exc:
            assert "damaged.dcm" in str(exc)
            errors += 1
        else:
            assert out.shape[0] > 0 and np.isfinite(out).all()
            assert 0.0 <= out.min() and out.max() <= 1.0
    assert errors > 0


def test_rle_lossless_decodes_to_the_same_image(tmp_path: Path) -> None:
    """RLE Lossless (pydicom decodes it without any plugin) gives exactly the uncompressed result."""
    from pydicom.uid import RLELossless

    pixels = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 13) % 4096
    plain = _make_ds(pixels, bits_stored=12)
    compressed = _make_ds(pixels, bits_stored=12)
    compressed.compress(RLELossless)
    assert compressed.file_meta.TransferSyntaxUID == RLELossless
    expected = read_image(_write(plain, tmp_path / "plain.dcm"))
    np.testing.assert_array_equal(read_image(_write(compressed, tmp_path / "rle.dcm")), expected)
