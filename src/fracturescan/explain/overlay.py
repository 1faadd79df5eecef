"""Colour overlays of Grad-CAM heatmaps on radiographs, and captioned PNG figures.

Only matplotlib's colormap registry and Pillow are used (no OpenCV, so no desktop OpenGL
library is needed on a headless server).
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError
from ..notices import SYNTHETIC_MODEL_SHORT, explanation_aid

log = logging.getLogger(__name__)

#: Longest side of a written figure; bigger radiographs are shrunk (the heatmap is far coarser).
MAX_SIDE = 1024
MIN_SIDE = 512
DISCLAIMER = explanation_aid()
#: Kept under its old name; the wording lives in :mod:`fracturescan.notices`.
disclaimer = explanation_aid


def _grey01(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"overlay expects a 2-D grayscale image, got shape {arr.shape}")
    grey = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
    return np.clip(grey, 0.0, 1.0)


def _fit(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The heatmap at ``shape``: a plain resize is exact because images are squash-resized."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != shape:
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return np.clip(np.nan_to_num(heat), 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap over a grayscale image: uint8 RGB (H, W, 3).

    ``image`` is float in [0, 1] or uint8; ``heatmap`` is in [0, 1] (resized to the image if
    its shape differs). ``alpha`` is the heatmap opacity: 0 gives the grey image, 1 the heatmap.

    Raises:
        ConfigError: ``alpha`` outside [0, 1] or an unknown matplotlib colormap name.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}.")
    import matplotlib  # imported here: only overlays need it

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as exc:
        raise ConfigError(f"Unknown colormap {colormap!r}: use a matplotlib name such as jet, turbo or inferno.") from exc
    grey = _grey01(image)
    colour = cmap(_fit(heatmap, grey.shape))[..., :3]
    blend = (1.0 - alpha) * grey[..., None] + alpha * colour
    return np.rint(np.clip(blend, 0.0, 1.0) * 255.0).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable bundled font (Pillow >= 10.1)
    except TypeError:  # older Pillow: fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap measured in pixels, so narrow radiographs keep the whole caption."""
    chars = max(8, len(text))
    while chars > 8 and draw.textlength(max(textwrap.wrap(text, chars), key=len), font=font) > width:
        chars -= 1
    return textwrap.wrap(text, chars)


def add_caption(rgb: np.ndarray, lines: list[str]) -> Image.Image:
    """A new image: ``rgb`` above a black strip with ``lines`` in white, wrapped to fit."""
    h, w = rgb.shape[:2]
    size = max(10, min(20, w // 24))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [part for line in lines for part in _wrap(measure, line, font, w - 8)]
    step = size + 4
    canvas = Image.new("RGB", (w, h + step * len(wrapped) + 6), "black")
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((4, h + 3 + i * step), line, fill="white", font=font)
    return canvas


def display_size(image: np.ndarray, heatmap: np.ndarray, max_side: int = MAX_SIDE,
                 min_side: int = MIN_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Resize image and heatmap together so the longer side lies in [min_side, max_side]
    (small images are enlarged so the caption stays legible)."""
    h, w = image.shape[:2]
    longest = max(h, w)
    scale = max_side / longest if longest > max_side else (min_side / longest if longest < min_side else 1.0)
    if scale == 1.0:
        return image, heatmap
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    shrink = lambda a: np.asarray(Image.fromarray(np.asarray(a, np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))  # noqa: E731
    return shrink(image), shrink(heatmap)


def caption_lines(probability: float, threshold: float, synthetic: bool,
                  method_label: str = "Grad-CAM") -> list[str]:
    """The caption of a written figure: probability and decision, disclaimer (naming the heatmap's
    method), synthetic note."""
    decision = "abnormal" if probability >= threshold else "normal"
    lines = [f"P(abnormal) = {probability:.3f} -> {decision} (threshold {threshold:.3f})",
             disclaimer(method_label)]
    if synthetic:
        lines.append(SYNTHETIC_MODEL_SHORT)
    return lines


def captioned_figure(image: np.ndarray, heatmap: np.ndarray, lines: list[str], alpha: float = 0.4) -> Image.Image:
    """The heatmap over the image at display size (longer side between :data:`MIN_SIDE` and
    :data:`MAX_SIDE`) above a caption strip with ``lines``: what ``explain`` writes and the API
    returns."""
    small_image, small_heat = display_size(_grey01(image), heatmap)
    return add_caption(overlay(small_image, small_heat, alpha), lines)


def save_figure(path: Path, image: np.ndarray, heatmap: np.ndarray, lines: list[str], alpha: float = 0.4) -> Path:
    """Write :func:`captioned_figure` as a PNG file."""
    figure = captioned_figure(image, heatmap, lines, alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path, format="PNG")
    log.debug("wrote %s", path)
    return path
