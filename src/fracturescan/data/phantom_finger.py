"""Synthetic finger radiograph phantoms (``XR_FINGER``): :func:`sample_finger`, :func:`render_finger`.

The same machinery as the wrist (:mod:`.phantom_projection` for hollow-tube bones, :mod:`.phantom`
for the film), with a finger's anatomy: the metacarpal head, the proximal, middle and distal
phalanges laid end to end with joint spaces, the neighbouring metacarpal shafts at the bottom of
the film, and the finger's soft tissue. Lengths are in image heights along ``v`` (towards the
fingertip); ``x`` runs across the finger, ``z`` dorsal.

A fracture cuts the shaft of the proximal phalanx (or, in a fifth of studies, the middle one)
with the same displaced, angulated geometry as the wrist's, and its box is measured from the
pixels it changed. As for the wrist, every draw happens whatever the label, so a fractured and an
intact study with the same seed differ only inside the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fracturescan.data.phantom import render_film
from fracturescan.data.phantom_anatomy import FractureGeometry, _sample_fracture
from fracturescan.data.phantom_projection import _K_SOFT, Box, _add_tube, _Canvas, _local, _project, _Tube, _tube_thickness

# Phalanges, tip first: (name, tip v, length, shaft radius, head radius) before scaling.
_PHALANGES: tuple[tuple[str, float, float, float, float], ...] = (
    ("proximal", 0.09, 0.27, 0.021, 0.029),
    ("middle", 0.265, 0.155, 0.017, 0.024),
    ("distal", 0.375, 0.09, 0.014, 0.020),
)


@dataclass(frozen=True)
class FingerAnatomy:
    """Study-level parameters of a finger phantom, shared by all its views."""

    side: str  # "L" or "R": mirrors the image and sets the lead marker
    fractured: bool
    scale: float  # overall size
    thickness: float  # bone width factor
    cortex: float
    soft_width: float
    neighbour_spread: float  # how far the neighbouring metacarpals sit
    broken_bone: str  # "proximal" or "middle" phalanx
    fracture: FractureGeometry


def sample_finger(rng: np.random.Generator, fracture: bool) -> FingerAnatomy:
    """Sample one study's finger; ``fracture`` only sets the flag (same draws either way)."""
    scale = float(rng.uniform(0.9, 1.1))
    side = "L" if rng.random() < 0.5 else "R"
    thickness = float(rng.uniform(0.9, 1.1))
    cortex = float(rng.uniform(0.005, 0.007)) * scale
    soft = float(rng.uniform(0.05, 0.062)) * scale
    spread = float(rng.uniform(0.085, 0.1)) * scale
    broken = "middle" if rng.random() < 0.2 else "proximal"
    geometry = _sample_fracture(rng, scale * 0.8)
    length = dict((name, length) for name, _, length, _, _ in _PHALANGES)[broken] * scale
    # Mid-shaft, away from both joints (the wrist's offset is near the bone's end).
    geometry = replace(geometry, offset=float(rng.uniform(0.35, 0.6)) * length)
    return FingerAnatomy(side, fracture, scale, thickness, cortex, soft, spread, broken, geometry)


def _bones(anat: FingerAnatomy, theta: float) -> list[tuple[str, _Tube, float]]:
    """(name, tube, drawn extent) of every bone, projected at ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    k, w = anat.scale, anat.thickness

    def radius(r: float) -> float:  # a slightly flattened bone: narrower seen from the side
        return math.hypot(r * c, 0.85 * r * s) * w * k

    bones = [("metacarpal", _Tube(tip=(0.0, -0.115 * k), direction=(0.0, 1.0), r_shaft=radius(0.026),
                                  r_end=radius(0.036), flare=0.07, cortex=anat.cortex, end_slope=0.0,
                                  cap=0.014), 0.6)]
    for name, tip, length, r_shaft, r_head in _PHALANGES:
        bones.append((name, _Tube(tip=(0.0, tip * k), direction=(0.0, 1.0), r_shaft=radius(r_shaft),
                                  r_end=radius(r_head), flare=0.05 * k, cortex=anat.cortex * 0.9,
                                  end_slope=0.0, cap=0.012, length=length * k), length * k))
    for sign in (-1.0, 1.0):  # the neighbouring metacarpals, splayed, low on the film
        angle = math.radians(sign * 6.0)
        tip_u = _project(sign * anat.neighbour_spread, -0.01, theta)
        bones.append((f"neighbour{sign:+.0f}", _Tube(
            tip=(tip_u, -0.16 * k), direction=(math.sin(angle), math.cos(angle)), r_shaft=radius(0.022),
            r_end=radius(0.032), flare=0.07, cortex=anat.cortex, end_slope=0.0, cap=0.014), 0.5))
    return bones


def _soft_tissue(canvas: _Canvas, anat: FingerAnatomy, theta: float) -> np.ndarray:
    """Soft tissue of the finger (a rounded tube) and the palm below it (already weighted)."""
    c, s = math.cos(theta), math.sin(theta)
    k = anat.scale
    finger = _Tube(tip=(0.0, 0.41 * k), direction=(0.0, 1.0),
                   r_shaft=math.hypot(anat.soft_width * c, 0.8 * anat.soft_width * s),
                   r_end=math.hypot(anat.soft_width * c, 0.8 * anat.soft_width * s) * 0.9,
                   flare=0.05, cortex=0.0, end_slope=0.0, cap=0.05, length=0.75 * k, k_medulla=_K_SOFT)
    palm_half = math.hypot(2.4 * anat.neighbour_spread * c, 0.06 * s)
    palm = replace(finger, tip=(0.0, -0.2 * k), r_shaft=palm_half, r_end=palm_half, cap=0.08, length=3.0)
    field = np.zeros_like(canvas.u)
    for tube in (finger, palm):
        a, d = _local(tube, canvas.u, canvas.v)
        field = np.maximum(field, _tube_thickness(tube, a, d))
    return field.astype(np.float32)


def project_finger(anatomy: FingerAnatomy, theta: float, height: int, width: int,
                   pose: tuple[float, ...], fracture: bool) -> tuple[np.ndarray, list[Box]]:
    """Attenuation of one finger view and the pixel box the fracture changed (if drawn)."""
    canvas = _Canvas(height, width, pose, mirror=anatomy.side == "L")
    field = _soft_tissue(canvas, anatomy, theta)
    boxes: list[Box] = []
    for name, tube, extent in _bones(anatomy, theta):
        broken = (anatomy.fracture, theta) if fracture and name == anatomy.broken_bone else None
        box = _add_tube(canvas, field, tube, extent, broken)
        if box is not None:
            boxes.append(box)
    return field, boxes


def render_finger(
    rng: np.random.Generator, height: int, width: int, *, view: str, anatomy: FingerAnatomy,
    fracture: bool | None = None,
) -> tuple[np.ndarray, Box | None]:
    """Render one view (``PA``, ``OBL``, ``LAT``) of a finger phantom; like
    :func:`~fracturescan.data.phantom.render_wrist`, returns the uint8 image and the fracture box."""
    fracture = anatomy.fractured if fracture is None else fracture
    return render_film(
        rng, height, width, view=view, side=anatomy.side, fracture=fracture,
        project=lambda theta, pose: project_finger(anatomy, theta, height, width, pose, fracture))
