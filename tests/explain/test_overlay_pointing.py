"""Overlays, captions, box hits and annotation parsing (no model needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from fracturescan.errors import ConfigError, DatasetError
from fracturescan.explain import add_caption, caption_lines, overlay, read_annotations
from fracturescan.explain.files import figure_names
from fracturescan.explain.pointing import peak_in_box


def _grey(h: int = 20, w: int = 30) -> np.ndarray:
    return np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)


def test_overlay_shape_dtype_and_alpha_extremes() -> None:
    image = _grey()
    heat = np.random.default_rng(0).random(image.shape).astype(np.float32)
    out = overlay(image, heat, alpha=0.4)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    grey = np.rint(image * 255).astype(np.uint8)
    assert np.array_equal(overlay(image, heat, alpha=0.0), np.repeat(grey[..., None], 3, axis=2))
    jet = np.rint(matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    assert np.abs(overlay(image, heat, alpha=1.0).astype(int) - jet).max() <= 1
    # 0.4 blend, computed independently
    expected = np.rint((0.6 * image[..., None] + 0.4 * matplotlib.colormaps["jet"](heat)[..., :3]) * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_overlay_accepts_uint8_and_resizes_heatmap() -> None:
    image = np.full((12, 8), 200, np.uint8)
    out = overlay(image, np.zeros((3, 2), np.float32), alpha=0.0)
    assert out.shape == (12, 8, 3) and (out == 200).all()


def test_overlay_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        overlay(_grey(), _grey(), alpha=1.5)
    with pytest.raises(ConfigError, match="colormap"):
        overlay(_grey(), _grey(), colormap="no-such-map")


def test_caption_adds_a_strip_below_and_keeps_the_image() -> None:
    rgb = np.full((40, 60, 3), 77, np.uint8)
    lines = caption_lines(0.91, 0.5, synthetic=True)
    assert any("not a diagnosis" in line for line in lines) and any("SYNTHETIC" in line for line in lines)
    assert not any("SYNTHETIC" in line for line in caption_lines(0.1, 0.5, synthetic=False))
    named = caption_lines(0.9, 0.5, False, "integrated gradients vs. typical normal")
    assert named[1] == "integrated gradients vs. typical normal: explanation aid, not a diagnosis"
    figure = np.asarray(add_caption(rgb, lines))
    assert figure.shape[1] == 60 and figure.shape[0] > 40
    assert (figure[:40] == 77).all()
    assert figure[40:].max() > 0  # some text was drawn


def test_peak_in_box_inclusive_and_margin() -> None:
    box = (10, 20, 30, 40)  # x0, y0, x1, y1 inclusive
    assert peak_in_box((20, 10), box, (100, 100))  # (row, col) on the corner
    assert peak_in_box((40, 30), box, (100, 100))
    assert not peak_in_box((41, 30), box, (100, 100))
    assert not peak_in_box((20, 9), box, (100, 100))
    assert peak_in_box((44, 30), box, (100, 100), margin=0.05)  # 5 px slack on a 100-px side
    assert not peak_in_box((46, 30), box, (100, 100), margin=0.05)
    assert not peak_in_box(None, box, (100, 100))


def test_read_annotations_resolves_mura_prefix(tmp_path: Path) -> None:
    (tmp_path / "annotations.csv").write_text(
        "image_path,x0,y0,x1,y1\nMURA-v1.1/valid/XR_WRIST/p1/study1_positive/image1.png,1,2,3,4\n")
    boxes = read_annotations(tmp_path)
    assert boxes == {(tmp_path / "valid/XR_WRIST/p1/study1_positive/image1.png").resolve(): (1, 2, 3, 4)}


def test_read_annotations_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="annotations.csv"):
        read_annotations(tmp_path)
    (tmp_path / "annotations.csv").write_text("image_path,x0,y0,x1,y1\nMURA-v1.1/valid/a.png,1,2\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_annotations(tmp_path)


def test_figure_names_unique_for_mura_trees() -> None:
    paths = [Path("p1/study1_positive/image1.png"), Path("p2/study1_positive/image1.png"), Path("p2/x.png")]
    assert figure_names(paths) == ["p1_study1_positive_image1_heatmap.png",
                                   "p2_study1_positive_image1_heatmap.png", "x_heatmap.png"]
    assert figure_names([Path("a/b.png")]) == ["b_heatmap.png"]
