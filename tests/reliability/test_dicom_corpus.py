"""Every DICOM file that pydicom and pydicom-data ship (files nobody here wrote) gets an image or
a specific, correct reason; dual-personality (TIFF preamble) files are read as DICOM; 12-bit
JPEG Extended decodes with the optional pylibjpeg-libjpeg, with a clear message without it;
the CLI prints one line per unreadable file, no third-party tracebacks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from fracturescan.data.images import read_image, sniff_format  # noqa: E402
from fracturescan.errors import FracturescanError, UnsupportedImageError  # noqa: E402

#: Refused files and a phrase of the reason each must get (checked by hand against the file).
REFUSED = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
    "ExplVR_BigEndNoMeta.dcm": "no pixel data",  # RT Ion Plan
    "ExplVR_LitEndNoMeta.dcm": "no pixel data",
    "JPEG-lossy.dcm": "misplaced marker segment",  # broken stream; JPGExtended.dcm is its fixed twin
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot be decoded",
    "MR_small_padded.dcm": "8,320 bytes",  # more pixel data than the header declares
    "MR_truncated.dcm": "8,130 bytes",  # less
    "UN_sequence.dcm": "no pixel data",
    "badVR.dcm": "6,000 bytes",
    "empty_charset_LEI.dcm": "no pixel data",
    "meta_missing_tsyntax.dcm": "no valid Rows/Columns",
    "nested_priv_SQ.dcm": "no valid Rows/Columns",
    "no_meta.dcm": "no DICOM attributes",
    "no_meta_group_length.dcm": "no pixel data",
    "priv_SQ.dcm": "no pixel data",
    "reportsi.dcm": "modality SR",
    "reportsi_with_empty_number_tags.dcm": "modality SR",
    "rtplan.dcm": "modality RTPLAN",
    "rtplan_truncated.dcm": "modality RTPLAN",
    "rtstruct.dcm": "modality RTSTRUCT",
    "test-SR.dcm": "modality SR",
    "waveform_ecg.dcm": "modality ECG",
}
DUAL_PERSONALITY = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm",
                    "examples_rgb_color.dcm")


def corpus() -> list[Path]:
    """The .dcm files of pydicom's test data and of the pydicom-data package (read from disk:
    pydicom's own lookup would try to download missing files)."""
    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pydicom-data is not installed (a dev dependency: pip install pydicom-data)")
    folders.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    return sorted(p for folder in folders for p in folder.glob("*.dcm") if p.is_file())


def test_every_corpus_file_gets_an_image_or_its_reason() -> None:
    files = corpus()
    assert len(files) >= 140
    names = [p.name for p in files]
    assert set(REFUSED) <= set(names)
    read = 0
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        try:
            image = read_image(path)
        except FracturescanError as exc:
            assert path.name in REFUSED, f"{path.name} refused: {exc}"
            assert REFUSED[path.name] in str(exc), f"{path.name}: {exc}"
            assert "\n" not in str(exc) and path.name in str(exc)
            continue
        assert path.name not in REFUSED, f"{path.name} was expected to be refused"
        assert image.dtype == np.float32 and image.ndim == 2 and np.isfinite(image).all()
        assert 0.0 <= image.min() <= image.max() <= 1.0
        assert image.shape == (int(header.Rows), int(header.Columns)), path.name  # the declared size
        read += 1
    assert read == len(files) - len(REFUSED)


@pytest.mark.parametrize("name", DUAL_PERSONALITY)
def test_dual_personality_files_are_dicom(name: str) -> None:
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    data = path.read_bytes()
    assert data[:4] in (b"II*\x00", b"MM\x00*")  # a TIFF header in the 128-byte preamble
    assert sniff_format(data) == "dicom"
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    if raw.ndim == 3:
        raw = raw @ np.array([0.299, 0.587, 0.114])
    image = read_image(data, name=name)
    assert np.corrcoef(image.ravel(), raw.ravel())[0, 1] > 0.99


def _jpeg_extended() -> Path:
    return Path(pydicom.__file__).parent / "data" / "test_files" / "JPGExtended.dcm"


def test_12_bit_jpeg_extended_decodes_with_pylibjpeg() -> None:
    pytest.importorskip("libjpeg", reason="pylibjpeg-libjpeg (extra jpeg12) not installed")
    from pydicom.pixels import pixel_array

    raw = pixel_array(_jpeg_extended(), decoding_plugin="pylibjpeg").astype(np.float64)
    image = read_image(_jpeg_extended())
    assert image.shape == raw.shape == (1024, 256) and raw.max() > 255  # really 12-bit data
    assert np.corrcoef(image.ravel(), raw.ravel())[0, 1] > 0.99


def test_12_bit_jpeg_extended_without_its_decoder_names_the_extra_and_licence(monkeypatch) -> None:
    import pydicom.pixels

    real = pydicom.pixels.get_decoder

    class _WithoutLibjpeg:  # what pydicom reports when pylibjpeg-libjpeg is not installed
        is_available = True
        available_plugins = ("gdcm", "pillow")

    monkeypatch.setattr(pydicom.pixels, "get_decoder",
                        lambda uid: _WithoutLibjpeg() if uid == "1.2.840.10008.1.2.4.51" else real(uid))
    with pytest.raises(UnsupportedImageError) as info:
        read_image(_jpeg_extended())
    message = str(info.value)
    assert "JPGExtended.dcm" in message and "JPEG Extended" in message and "12 bits" in message
    assert "fracturescan[jpeg12]" in message and "GPL v3" in message and "PNG" in message


def test_cli_prints_one_line_per_unreadable_file(tmp_path: Path, capsys) -> None:
    """pydicom logs a traceback per failing decoder plugin (even when the next one succeeds):
    the CLI shows only its own line per file."""
    from fracturescan.cli.main import main
    from tests.webapp.conftest import make_checkpoint

    model = make_checkpoint(tmp_path / "model")
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    code = main(["predict", str(model), str(folder / "JPEG-lossy.dcm"), str(folder / "JPGExtended.dcm"),
                 str(folder / "MR_truncated.dcm")])
    out, err = capsys.readouterr()
    assert code == 0  # one file was read
    assert "Traceback" not in err and "pydicom" not in err, err
    rows = [line for line in out.splitlines() if ".dcm" in line]
    assert any("JPEG-lossy.dcm" in r and "misplaced marker segment" in r for r in rows)
    assert any("MR_truncated.dcm" in r and "8,130 bytes" in r for r in rows)
    assert not any("JPGExtended.dcm" in r and "unreadable" in r and "JPEG-lossy" not in r for r in rows)
