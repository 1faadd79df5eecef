"""Every entry of the bad-input catalogue through the reader, the Predictor and the CLI."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from fracturescan.cli.main import main
from fracturescan.data.images import read_image
from fracturescan.errors import ImageReadError
from fracturescan.inference import Predictor
from fracturescan.models import build_model
from fracturescan.models.checkpoint import save_checkpoint

from ..tolerances import assert_within, predictor_probability_bound
from .bad_inputs import CATALOGUE, BadInput, Fails, Reads, bomb_png, missing_requirement

BY_NAME = {entry.name: entry for entry in CATALOGUE}


def _build(entry: BadInput, folder: Path) -> Path:
    why = missing_requirement(entry)
    if why:
        pytest.skip(why)
    folder.mkdir(parents=True, exist_ok=True)
    return entry.build(folder)


def _assert_outcome(entry: BadInput, path: Path) -> None:
    """read_image(path) does what the catalogue says."""
    if isinstance(entry.expect, Fails):
        with pytest.raises(entry.expect.exc) as info:
            read_image(path)
        assert type(info.value) is entry.expect.exc  # not a parent or a sibling class
        message = str(info.value)
        assert entry.expect.phrase in message
        assert path.name in message  # the user learns WHICH file is wrong
        assert "\n" not in message  # one line on a terminal / in the app
        return
    image = read_image(path)
    assert image.dtype == np.float32 and image.ndim == 2
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    if entry.expect.shape is not None:
        assert image.shape == entry.expect.shape
    if entry.expect.check is not None:
        assert entry.expect.check(image), entry.expect.why


def test_catalogue_is_large_and_covers_both_outcomes() -> None:
    names = [e.name for e in CATALOGUE]
    assert len(names) == len(set(names)) and len(names) >= 30
    assert sum(isinstance(e.expect, Reads) for e in CATALOGUE) >= 10
    assert sum(isinstance(e.expect, Fails) for e in CATALOGUE) >= 20


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_read_image_outcome(entry: BadInput, tmp_path: Path) -> None:
    _assert_outcome(entry, _build(entry, tmp_path))


def test_decompression_bomb_is_refused_fast_and_small(tmp_path: Path) -> None:
    """40,000 x 40,000 = 1.6 G pixels: decoding would need 1.6 GB; refusal must need ~nothing."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(40_000, 40_000))
    assert path.stat().st_size < 200
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageReadError, match="too large"):
            read_image(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 5 * 2**20
    # Pillow allocates image memory outside tracemalloc's view: the peak RSS covers it.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024


def test_max_pixels_is_configurable_on_catalogue_images(tmp_path: Path) -> None:
    """The 10 x 10,000 strip reads by default and is refused under a 50,000-pixel limit."""
    path = _build(BY_NAME["png_10x10000"], tmp_path)
    assert read_image(path).shape == (10, 10_000)
    with pytest.raises(ImageReadError, match="100,000 pixels exceeds the limit of 50,000"):
        read_image(path, max_pixels=50_000)


# --------------------------------------------------------------------------- Predictor / CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained ResNet-18 checkpoint at 32 px (predictions are arbitrary but finite)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet18", weights="none", hidden=16)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model, {"input_size": 32})


def _runnable() -> list[BadInput]:
    return [e for e in CATALOGUE if missing_requirement(e) is None]


def test_whole_catalogue_as_one_batch(checkpoint: Path, tmp_path: Path) -> None:
    """One predict_paths call over every file: readable ones get a probability, the others an
    error naming the problem, and the batch runs to the end (batch_size 8 spans many chunks)."""
    entries = [e for e in _runnable() if e.file_level]
    paths = [e.build(_mkdir(tmp_path / e.name)) for e in entries]
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", backend="torch")
    images, studies = predictor.predict_paths(paths, batch_size=8, progress=False)
    assert [Path(i.path) for i in images] == paths  # every file reported, in order
    for entry, result in zip(entries, images):
        if isinstance(entry.expect, Reads):
            assert result.error is None, (entry.name, result.error)
            assert result.probability is not None and 0.0 <= result.probability <= 1.0
            assert result.abnormal == (result.probability >= predictor.threshold)
        else:
            assert result.probability is None and result.abnormal is None, entry.name
            assert entry.expect.phrase in (result.error or ""), (entry.name, result.error)
    # Each file is its own study: readable studies carry their image's probability, unless the
    # image is flagged (fracturescan.decision leaves flagged images out of the study, e.g. the
    # real JPEG Lossless sample, an NM scan, is "not a radiograph").
    assert len(studies) == len(images)
    for study, image in zip(studies, images):
        counted = image.probability is not None and not image.flags
        assert study.probability == (image.probability if counted else None), image.path
        assert study.n_images == int(counted)


def test_batch_probability_matches_single_image_prediction(checkpoint: Path, tmp_path: Path) -> None:
    """A readable file's probability does not depend on the broken files around it."""
    good = _build(BY_NAME["png_16bit"], tmp_path / "good")
    bad = _build(BY_NAME["png_cut_half"], tmp_path / "bad")
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", backend="torch")
    images, _ = predictor.predict_paths([bad, good, bad], batch_size=2, progress=False)
    (result,) = [i for i in images if Path(i.path) == good]  # results come grouped by study
    # A batch against a single image: other kernels, other rounding.
    assert_within(result.probability, predictor.predict_image(good),
                  predictor_probability_bound(predictor, [good])[0], "batch vs single image")


def test_batch_survives_a_path_that_cannot_be_opened(checkpoint: Path, tmp_path: Path) -> None:
    good = _build(BY_NAME["png_all_white"], tmp_path / "good")
    loop = _build(BY_NAME["symlink_loop"], tmp_path / "loop")
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", backend="torch")
    images, _ = predictor.predict_paths([good, loop], progress=False)
    assert images[0].probability is not None and "cannot be read" in (images[1].error or "")


CLI_SAMPLE = ("empty.png", "html_as.dcm", "png_cut_half", "jpeg_bomb_40k", "float_tiff_nan",
              "dicom_rt_plan", "dicom_unknown_syntax", "dicom_size_mismatch",
              "symlink_loop", "missing_file", "gif_as.png")


@pytest.mark.parametrize("name", CLI_SAMPLE)
def test_cli_predict_bad_file_one_line_error(name: str, checkpoint: Path, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    entry = BY_NAME[name]
    path = _build(entry, tmp_path)
    code = main(["predict", str(checkpoint), str(path), "--device", "cpu"])
    out, err = capfd.readouterr()
    assert code == 1
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    # The specific reason reaches the user (in the error line or the per-image table).
    assert entry.expect.phrase in out + err


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_cli_subprocess_bad_file_prints_one_stderr_line(checkpoint: Path, tmp_path: Path) -> None:
    """Outside pytest no handler captures logging: what a user's terminal really shows."""
    path = _build(BY_NAME["html_as.dcm"], tmp_path)
    result = subprocess.run([sys.executable, "-m", "fracturescan.cli.main", "predict", str(checkpoint),
                             str(path), "--device", "cpu"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
