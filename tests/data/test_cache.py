"""The preprocessed image cache: decode once, reuse, invalidate on change, skip unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fracturescan.data import cache as cache_module
from fracturescan.data.cache import build_cache
from fracturescan.data.images import read_image, resize_square
from fracturescan.data.mura import load_mura
from fracturescan.errors import DatasetError

from ..conftest import write_png


def test_pixels_match_direct_decoding(mura_fixture: Path, tmp_path: Path) -> None:
    records = load_mura(mura_fixture, "train")
    cached = build_cache(records, 24, tmp_path / "c")
    assert cached.pixels.shape == (len(records), 24, 24) and cached.pixels.dtype == np.uint8
    for i, record in enumerate(records):
        assert np.array_equal(cached.pixels[i], resize_square(read_image(record.path), 24))
    assert np.array_equal(cached.labels, [r.label for r in records])


def test_second_build_reuses_without_decoding(mura_fixture: Path, tmp_path: Path, monkeypatch) -> None:
    records = load_mura(mura_fixture, "train")
    first = build_cache(records, 16, tmp_path / "c")

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(cache_module, "read_image", no_decoding)
    second = build_cache(records, 16, tmp_path / "c")
    assert second.key == first.key and np.array_equal(second.pixels, first.pixels)
    # a different size is a different cache
    with pytest.raises(AssertionError, match="reused"):
        build_cache(records, 20, tmp_path / "c")


def test_changed_file_gets_a_new_cache(mura_fixture: Path, tmp_path: Path) -> None:
    records = load_mura(mura_fixture, "train")
    first = build_cache(records, 16, tmp_path / "c")
    write_png(records[0].path, value=250, size=(33, 21))
    second = build_cache(records, 16, tmp_path / "c")
    assert second.key != first.key
    assert not np.array_equal(second.pixels[0], first.pixels[0])
    assert np.array_equal(second.pixels[1:], first.pixels[1:])
    assert len(list((tmp_path / "c").iterdir())) == 2  # no temp folders left behind


def test_unreadable_images_are_skipped_and_listed(mura_fixture: Path, tmp_path: Path) -> None:
    records = load_mura(mura_fixture, "train")
    records[2].path.write_bytes(b"not a png at all")
    cached = build_cache(records, 16, tmp_path / "c")
    assert len(cached.records) == len(records) - 1 and records[2] not in cached.records
    assert len(cached.skipped) == 1 and cached.skipped[0][0] == str(records[2].path)
    assert records[2].path.name in cached.skipped[0][1]  # the reason names the file
    assert cached.pixels.shape[0] == len(records) - 1
    for r in records:
        r.path.write_bytes(b"")
    with pytest.raises(DatasetError, match="None of the"):
        build_cache(records, 16, tmp_path / "d")
