"""Synthetic wrist radiograph phantoms (numpy + Pillow only): :func:`render_wrist`.

A study's anatomy lives in a 3-D "arm frame" (:mod:`fracturescan.data.phantom_anatomy`,
sampled once per study by :func:`~fracturescan.data.phantom_anatomy.sample_anatomy`).  A view
projects that frame at an angle (:data:`VIEWS`: PA 0°, oblique 45°, lateral 90°) into an
attenuation image (:mod:`fracturescan.data.phantom_projection`: hollow tubes and ellipsoids
for the bones, which gives the bright cortex and darker medulla of real films).  This module
turns that image into a film: pose, exposure, blur, film fog, collimator borders, burnt-in
text and noise.  The MURA-layout data set writer is :mod:`fracturescan.data.synth`.

A fracture cuts the distal radius (and sometimes the ulna) with an irregular gap and moves the
distal fragment (shift + angulation). The fracture box is measured, not guessed: it is the
bounding box of the pixels where the fractured bone differs from the intact one, widened by the
blur kernel. Rendering consumes the random generator identically with and without a fracture,
so the two images differ only inside that box.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fracturescan.data.phantom_anatomy import WristAnatomy
from fracturescan.data.phantom_projection import Box, project_wrist

#: Projection angle of each view (degrees); the 3-D anatomy is projected at this angle.
VIEWS: dict[str, float] = {"PA": 0.0, "OBL": 45.0, "LAT": 90.0}


# --------------------------------------------------------------------------- film

@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 6))


def _blur(img: np.ndarray, sigma: float) -> tuple[np.ndarray, int]:
    """Separable Gaussian blur (edge padded); returns the image and the kernel radius."""
    radius = max(int(math.ceil(3 * sigma)), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    h, w = img.shape
    padded = np.pad(img, radius, mode="edge")
    rows = sum(k * padded[i:i + h, :] for i, k in enumerate(kernel))
    out = sum(k * rows[:, i:i + w] for i, k in enumerate(kernel))
    return np.asarray(out, dtype=np.float32), radius


def _burn_text(rng: np.random.Generator, img: np.ndarray, side: str, view: str) -> None:
    """Burn a lead side marker, the view name and a date into three different corners."""
    h, w = img.shape
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    corners = rng.permutation(4)[:3]
    day, month, year = (int(rng.integers(lo, hi)) for lo, hi in ((1, 29), (1, 13), (2003, 2016)))
    date = f"{day:02d}.{month:02d}.{year}"
    sizes = (int(h * rng.uniform(0.07, 0.1)), int(h * rng.uniform(0.045, 0.06)), int(h * 0.04))
    for corner, text, size, boxed in zip(corners, (side, view, date), sizes, (True, False, False)):
        font = _font(size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        margin = int(0.03 * h) + 2
        x = margin if corner % 2 == 0 else w - margin - (x1 - x0)
        y = margin if corner < 2 else h - margin - (y1 - y0)
        draw.text((x - x0, y - y0), text, fill=255, font=font)
        if boxed:  # lead markers sit in a rectangular holder
            draw.rectangle((x - 2, y - 2, x + x1 - x0 + 2, y + y1 - y0 + 2), outline=200)
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    img[:] = img * (1 - alpha) + alpha * float(rng.uniform(0.85, 1.0))


def _collimate(rng: np.random.Generator, img: np.ndarray) -> None:
    """Some films show the collimator's unexposed border on a few sides."""
    h, w = img.shape
    sides, widths = rng.random(4) < 0.25, rng.uniform(0.02, 0.07, 4)
    level = float(rng.uniform(0.55, 0.85))
    bands = (np.s_[: int(widths[0] * h)], np.s_[h - int(widths[1] * h):],
             np.s_[:, : int(widths[2] * w)], np.s_[:, w - int(widths[3] * w):])
    for band in (b for b, on in zip(bands, sides) if on):
        img[band] = level


#: Projects a study's anatomy at (angle in radians, pose) into (attenuation, fracture boxes).
Projector = Callable[[float, tuple[float, ...]], tuple[np.ndarray, list[Box]]]


def render_film(
    rng: np.random.Generator, height: int, width: int, *, view: str, side: str,
    project: Projector, fracture: bool,
) -> tuple[np.ndarray, Box | None]:
    """Turn one projected view into a ``height`` x ``width`` uint8 film (any body part).

    ``project(theta, pose)`` gives the attenuation image and the boxes a fracture changed; this
    adds pose, exposure, blur, fog, collimation, burnt-in text (``side`` marker) and noise, and
    returns the merged fracture box (``None`` when ``fracture`` is False). ``project`` must not
    draw random numbers, so the stream is consumed the same with and without a fracture.
    """
    if view not in VIEWS:
        raise ValueError(f"Unknown view {view!r}: choose one of {', '.join(VIEWS)}.")
    theta = math.radians(VIEWS[view])
    rotation = math.radians(float(np.clip(rng.normal(0.0, 8.0), -20, 20)))
    pose = (rotation, float(rng.uniform(0.85, 1.1)), float(rng.uniform(-0.05, 0.05)),
            float(rng.uniform(-0.1, 0.0)))
    exposure, fog, gamma, gain = rng.uniform((0.85, 0.02, 0.8, 0.85), (1.15, 0.12, 1.25, 1.0))
    gradient = rng.uniform(-0.05, 0.05, 2)
    noise_sigma = float(rng.uniform(0.008, 0.03))
    blur_sigma = float(rng.uniform(0.5, 1.1)) * max(height / 256, 0.25)
    attenuation, boxes = project(theta, pose)
    signal = 1.0 - np.exp(-exposure * attenuation)
    signal, kernel_radius = _blur(signal.astype(np.float32), blur_sigma)
    ramp = (gradient[0] * np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
            + gradient[1] * np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None])
    img = fog + gain * (1 - fog) * signal ** gamma + ramp  # film fog, exposure, uneven field
    _collimate(rng, img)
    _burn_text(rng, img, side, view)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * noise_sigma
    out = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return out, _merge_boxes(boxes, kernel_radius + 1, height, width) if fracture else None


def render_wrist(
    rng: np.random.Generator, height: int, width: int, *, view: str, anatomy: WristAnatomy,
    fracture: bool | None = None,
) -> tuple[np.ndarray, Box | None]:
    """Render one view of a wrist phantom as a ``height`` x ``width`` uint8 image.

    Args:
        rng: source of the per-image randomness (pose, exposure, noise, text placement).
        height, width: output size in pixels.
        view: one of :data:`VIEWS` (``"PA"``, ``"OBL"``, ``"LAT"``).
        anatomy: the study's anatomy from
            :func:`~fracturescan.data.phantom_anatomy.sample_anatomy`.
        fracture: draw the fracture; ``None`` means ``anatomy.fractured``. The random stream
            is consumed identically either way.

    Returns:
        The image and the fracture's bounding box ``(x0, y0, x1, y1)`` in pixels, inclusive and
        inside the image, or ``None`` when no fracture is drawn.
    """
    fracture = anatomy.fractured if fracture is None else fracture
    return render_film(
        rng, height, width, view=view, side=anatomy.side, fracture=fracture,
        project=lambda theta, pose: project_wrist(anatomy, theta, height, width, pose, fracture))


def _merge_boxes(boxes: list[Box], margin: int, height: int, width: int) -> Box | None:
    if not boxes:
        return None
    return (max(min(b[0] for b in boxes) - margin, 0), max(min(b[1] for b in boxes) - margin, 0),
            min(max(b[2] for b in boxes) + margin, width - 1),
            min(max(b[3] for b in boxes) + margin, height - 1))
