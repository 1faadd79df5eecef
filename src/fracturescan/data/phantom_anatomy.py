"""Study-level anatomy of a wrist phantom: the random parameters every view of a study shares.

Lengths are in the 3-D "arm frame", in units of the image height: ``x`` runs across the wrist
towards the radius (thumb side), ``z`` runs dorsal, ``v`` runs along the arm towards the
fingers, and ``v = 0`` is the tip of the distal radius.  :func:`sample_anatomy` draws a
:class:`WristAnatomy`, including the :class:`FractureGeometry` of the radius and ulna (always
sampled, drawn only when the study is fractured).  How the anatomy becomes pixels is in
:mod:`fracturescan.data.phantom_projection` and :mod:`fracturescan.data.phantom`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FractureGeometry:
    """Shape of one bone's fracture in the arm frame (lengths in image heights, angles in deg)."""

    offset: float  # distance of the fracture line proximal to the bone tip
    slope: tuple[float, float]  # obliquity of the line (x, z components)
    jag: tuple[tuple[float, float, float], ...]  # (amplitude, frequency, phase) of the edge
    gap: float  # width of the dark fracture line
    shift: tuple[float, float]  # displacement of the distal fragment (x, z)
    tilt: tuple[float, float]  # angulation of the distal fragment (x, z), degrees
    impaction: float  # shortening along the bone axis

    def projected(self, theta: float) -> tuple[float, float, float]:
        """In-plane (slope, shift, tilt in radians) seen at projection angle ``theta``."""
        c, s = math.cos(theta), math.sin(theta)
        return (
            self.slope[0] * c + self.slope[1] * s,
            self.shift[0] * c + self.shift[1] * s,
            math.radians(self.tilt[0] * c + self.tilt[1] * s),
        )


@dataclass(frozen=True)
class WristAnatomy:
    """Patient/study-level parameters shared by all views of one study.

    Fracture geometry is always sampled (so random streams do not depend on the label);
    ``fractured`` says whether it is drawn, ``ulna_fractured`` whether the ulna breaks too.
    """

    side: str  # "L" or "R": mirrors the image and sets the lead marker
    fractured: bool
    ulna_fractured: bool
    radius_width: float
    ulna_width: float
    cortex: float
    ulnar_variance: float
    forearm_width: float
    hand_width: float
    carpal_scale: float
    finger_spread: float
    radius_fracture: FractureGeometry
    ulna_fracture: FractureGeometry


def _sample_fracture(rng: np.random.Generator, scale: float) -> FractureGeometry:
    """Draw a conspicuous fracture: gap and shift a few % of the image, tilt 10-25°."""
    sign = 1.0 if rng.random() < 0.8 else -1.0  # mostly dorsal/radial (Colles), some Smith
    jag = tuple(
        (float(rng.uniform(0.003, 0.007)), float(rng.uniform(60, 160)), float(rng.uniform(0, 6.3)))
        for _ in range(3)
    )
    return FractureGeometry(
        offset=float(rng.uniform(0.045, 0.075)) * scale,
        slope=(float(rng.uniform(-0.35, 0.35)), float(rng.uniform(-0.35, 0.35))),
        jag=jag,
        gap=float(rng.uniform(0.024, 0.036)) * scale,
        # One sign for both components, so no projection angle can cancel the displacement.
        shift=(sign * float(rng.uniform(0.025, 0.05)) * scale,
               sign * float(rng.uniform(0.03, 0.055)) * scale),
        tilt=(sign * float(rng.uniform(10, 22)), sign * float(rng.uniform(12, 25))),
        impaction=float(rng.uniform(0.0, 0.012)) * scale,
    )


def sample_anatomy(rng: np.random.Generator, fracture: bool) -> WristAnatomy:
    """Sample one study's anatomy; ``fracture`` only sets the flag (same draws either way)."""
    size = float(rng.uniform(0.9, 1.1))
    return WristAnatomy(
        side="L" if rng.random() < 0.5 else "R",
        fractured=fracture,
        ulna_fractured=bool(rng.random() < 0.35),
        radius_width=float(rng.uniform(0.030, 0.036)) * size,
        ulna_width=float(rng.uniform(0.022, 0.027)) * size,
        cortex=float(rng.uniform(0.0055, 0.008)) * size,
        ulnar_variance=float(rng.uniform(-0.015, 0.025)) * size,
        forearm_width=float(rng.uniform(0.125, 0.15)) * size,
        hand_width=float(rng.uniform(0.16, 0.19)) * size,
        carpal_scale=size * float(rng.uniform(0.92, 1.08)),
        finger_spread=float(rng.uniform(0.7, 1.3)),
        radius_fracture=_sample_fracture(rng, size),
        ulna_fracture=_sample_fracture(rng, size * 0.8),
    )
