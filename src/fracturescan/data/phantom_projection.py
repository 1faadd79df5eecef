"""Projection of a wrist phantom's 3-D anatomy into an attenuation image (before the film).

Bones are tubes and ellipsoids whose projected thickness is computed exactly for a hollow
cylinder/ellipsoid, which gives the bright cortex and darker medulla of real films; soft tissue
wraps forearm, palm and fingers.  A view projects the arm frame at an angle (PA 0°, oblique 45°,
lateral 90°), so every view of a study shows the same bones from another side.

A fracture cuts the distal radius (and sometimes the ulna) with an irregular gap and moves the
distal fragment (shift + angulation).  Each cut bone reports the pixel box where the fractured
bone differs from the intact one; :func:`project_wrist` returns those boxes with the image.
Nothing here draws random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fracturescan.data.phantom_anatomy import FractureGeometry, WristAnatomy

Box = tuple[int, int, int, int]
_K_CORTEX, _K_MEDULLA, _K_SOFT = 30.0, 3.5, 1.7  # attenuation per unit path length


# --------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class _Tube:
    """A projected long bone: tip (u, v), unit direction towards the tip, widths, end shape."""

    tip: tuple[float, float]
    direction: tuple[float, float]
    r_shaft: float
    r_end: float
    flare: float  # length over which the shaft widens to r_end
    cortex: float
    end_slope: float  # tilt of the articular surface
    cap: float  # rounding length of the ends
    length: float = 10.0  # long bones run off the film
    k_cortex: float = _K_CORTEX
    k_medulla: float = _K_MEDULLA


class _Canvas:
    """Arm-frame coordinates of every pixel plus the pose that maps arm frame to pixels."""

    def __init__(self, height: int, width: int, pose: tuple[float, ...], mirror: bool) -> None:
        self.h, self.w = height, width
        angle, self.scale, self.tx, self.ty = pose
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.mirror = -1.0 if mirror else 1.0
        px = ((np.arange(width, dtype=np.float32) + 0.5) - width / 2) / height
        py = (height / 2 - (np.arange(height, dtype=np.float32) + 0.5)) / height
        dx, dy = px[None, :] - self.tx, py[:, None] - self.ty
        self.u = (dx * self.cos + dy * self.sin) / self.scale * self.mirror
        self.v = (-dx * self.sin + dy * self.cos) / self.scale

    def region(self, u: float, v: float, radius: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the arm-frame disc (u, v, radius); None if off the image."""
        u = u * self.mirror
        x = self.scale * (u * self.cos - v * self.sin) + self.tx
        y = self.scale * (u * self.sin + v * self.cos) + self.ty
        col, row = x * self.h + self.w / 2, self.h / 2 - y * self.h
        rpix = radius * self.scale * self.h + 2
        r0, r1 = max(int(row - rpix), 0), min(int(row + rpix) + 1, self.h)
        c0, c1 = max(int(col - rpix), 0), min(int(col + rpix) + 1, self.w)
        return None if r0 >= r1 or c0 >= c1 else (slice(r0, r1), slice(c0, c1))


def _tube_thickness(tube: _Tube, a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Attenuation of a hollow tube at axial distance ``a`` (from the tip) and offset ``d``."""
    grow = np.clip(1.0 - a / tube.flare, 0.0, 1.0)
    radius = tube.r_shaft + (tube.r_end - tube.r_shaft) * grow * grow * (3 - 2 * grow)
    f = np.clip((a + tube.end_slope * d) / tube.cap, 0.0, 1.0)
    g = np.clip((tube.length - a) / tube.cap, 0.0, 1.0)
    radius = radius * np.sqrt(f * (2 - f) * g * (2 - g))  # rounded, sloped articular ends
    inner = np.maximum(radius - tube.cortex, 0.0)
    outer_len = 2 * np.sqrt(np.maximum(radius * radius - d * d, 0.0))
    inner_len = 2 * np.sqrt(np.maximum(inner * inner - d * d, 0.0))
    return tube.k_cortex * (outer_len - inner_len) + tube.k_medulla * inner_len


def _local(tube: _Tube, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axial distance from the tip (positive towards the shaft) and signed offset."""
    du, dv = u - tube.tip[0], v - tube.tip[1]
    eu, ev = tube.direction
    return -(du * eu + dv * ev), du * ev - dv * eu


def _fracture_line(frac: FractureGeometry, slope: float, d: np.ndarray) -> np.ndarray:
    line = frac.offset + slope * d
    for amp, freq, phase in frac.jag:
        line = line + amp * np.sin(freq * d + phase)
    return line


def _fractured_thickness(
    tube: _Tube, frac: FractureGeometry, theta: float, a: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """Proximal shaft up to the gap plus the displaced, angulated distal fragment."""
    slope, shift, tilt = frac.projected(theta)
    proximal = _tube_thickness(tube, a, d) * (a > _fracture_line(frac, slope, d) + frac.gap / 2)
    # Undo the fragment's motion: translate back, then rotate back about the hinge on the cortex.
    hinge_d = -math.copysign(tube.r_end, tilt)
    a1, d1 = a - frac.impaction - frac.offset, d - shift - hinge_d
    c, s = math.cos(tilt), math.sin(tilt)
    a0, d0 = a1 * c - d1 * s + frac.offset, a1 * s + d1 * c + hinge_d
    fragment = _tube_thickness(tube, a0, d0) * (a0 < _fracture_line(frac, slope, d0) - frac.gap / 2)
    return proximal + fragment


def _add_tube(canvas: _Canvas, field: np.ndarray, tube: _Tube, extent: float,
              frac: tuple[FractureGeometry, float] | None = None) -> Box | None:
    """Add a tube's attenuation to ``field``; return the pixel box where a fracture changed it."""
    centre_u = tube.tip[0] - tube.direction[0] * extent / 2
    centre_v = tube.tip[1] - tube.direction[1] * extent / 2
    region = canvas.region(centre_u, centre_v, extent / 2 + tube.r_end + 0.08)
    if region is None:
        return None
    a, d = _local(tube, canvas.u[region], canvas.v[region])
    intact = _tube_thickness(tube, a, d)
    if frac is None:
        field[region] += intact
        return None
    broken = _fractured_thickness(tube, frac[0], frac[1], a, d)
    field[region] += broken
    rows, cols = np.nonzero(np.abs(broken - intact) > 1e-4)
    if rows.size == 0:
        return None
    r0, c0 = region[0].start, region[1].start
    return (c0 + int(cols.min()), r0 + int(rows.min()), c0 + int(cols.max()), r0 + int(rows.max()))


def _add_ellipsoid(canvas: _Canvas, field: np.ndarray, centre: tuple[float, float],
                   axes: tuple[float, float], depth: float, angle: float, cortex: float) -> None:
    """Add a hollow ellipsoid (carpal bone) seen along its depth axis."""
    region = canvas.region(centre[0], centre[1], max(axes) + 0.01)
    if region is None:
        return
    du, dv = canvas.u[region] - centre[0], canvas.v[region] - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    q = ((du * c + dv * s) / axes[0]) ** 2 + ((-du * s + dv * c) / axes[1]) ** 2
    shrink = max(1.0 - cortex / min(axes), 0.2)
    outer = 2 * depth * np.sqrt(np.maximum(1.0 - q, 0.0))
    inner = 2 * depth * shrink * np.sqrt(np.maximum(1.0 - q / (shrink * shrink), 0.0))
    field[region] += _K_CORTEX * (outer - inner) + _K_MEDULLA * inner


def _project(x: float, z: float, theta: float) -> float:
    return x * math.cos(theta) + z * math.sin(theta)


def _unit(du: float, dv: float) -> tuple[float, float]:
    n = math.hypot(du, dv)
    return du / n, dv / n


# --------------------------------------------------------------------------- scene

# Carpal bones: (x, z, v, half-width x, half-depth z, half-length v, tilt in degrees).
_CARPALS: tuple[tuple[float, ...], ...] = (
    (0.062, 0.010, 0.050, 0.026, 0.022, 0.040, -40.0),  # scaphoid
    (0.014, 0.000, 0.046, 0.027, 0.029, 0.025, 0.0),  # lunate
    (-0.034, -0.006, 0.055, 0.024, 0.024, 0.023, 25.0),  # triquetrum
    (-0.044, -0.035, 0.064, 0.015, 0.016, 0.017, 0.0),  # pisiform
    (0.090, -0.012, 0.108, 0.024, 0.024, 0.025, -25.0),  # trapezium
    (0.052, 0.004, 0.114, 0.019, 0.019, 0.022, 0.0),  # trapezoid
    (0.013, 0.000, 0.108, 0.024, 0.029, 0.038, 0.0),  # capitate
    (-0.030, -0.006, 0.104, 0.025, 0.024, 0.035, 12.0),  # hamate
)
# Metacarpals II-V: (base x, base z, angle from the arm axis in degrees, length).
_METACARPALS: tuple[tuple[float, float, float, float], ...] = (
    (0.050, 0.004, 7.0, 0.30), (0.013, 0.010, 1.0, 0.31),
    (-0.022, 0.002, -4.5, 0.28), (-0.050, -0.008, -10.0, 0.26),
)


def _forearm_tubes(anat: WristAnatomy, theta: float) -> tuple[_Tube, _Tube, _Tube]:
    """Radius, ulna and ulnar styloid projected at ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    rw, uw = anat.radius_width, anat.ulna_width
    radius = _Tube(
        tip=(_project(0.060, 0.005, theta), 0.0), direction=(0.0, 1.0),
        r_shaft=math.hypot(rw * c, 0.85 * rw * s), r_end=math.hypot(1.75 * rw * c, 1.3 * rw * s),
        flare=0.13, cortex=anat.cortex, end_slope=0.42 * c - 0.2 * s, cap=0.012,
    )
    ulna_tip = anat.ulnar_variance - 0.012
    ulna = _Tube(
        tip=(_project(-0.056, -0.008, theta), ulna_tip), direction=(0.0, 1.0),
        r_shaft=uw, r_end=1.35 * uw, flare=0.06, cortex=anat.cortex * 0.9,
        end_slope=0.05, cap=0.012,
    )
    styloid_x = _project(-0.056 - 0.75 * uw, -0.008, theta)
    styloid = _Tube(
        tip=(styloid_x, ulna_tip + 0.018), direction=(0.0, 1.0), r_shaft=0.008, r_end=0.006,
        flare=0.02, cortex=0.003, end_slope=0.0, cap=0.007, length=0.04,
    )
    return radius, ulna, styloid


def _hand_tubes(anat: WristAnatomy, theta: float) -> list[tuple[_Tube, float]]:
    """Metacarpals and proximal phalanges (with the thumb), each with its length."""
    tubes: list[tuple[_Tube, float]] = []
    k = anat.carpal_scale

    def chain(x: float, z: float, v: float, d3: tuple[float, ...],
              lengths: tuple[float, ...]) -> None:
        """Append bones laid end to end from base (x, z, v) along 3-D direction ``d3``."""
        du, dv = _project(d3[0], d3[1], theta), d3[2]
        shrink = math.hypot(du, dv)
        direction = _unit(du, dv)
        base_u = _project(x, z, theta)
        for i, length in enumerate(lengths):
            proj_len = length * shrink * k
            tip = (base_u + direction[0] * proj_len, v + direction[1] * proj_len)
            r = (0.017 if i == 0 else 0.014) * k
            tubes.append((_Tube(tip=tip, direction=direction, r_shaft=r, r_end=r * 1.3,
                                flare=0.04, cortex=0.0045 * k, end_slope=0.0, cap=0.014,
                                length=proj_len), proj_len))
            gap = 0.016 * k
            base_u, v = tip[0] + direction[0] * gap, tip[1] + direction[1] * gap

    for x, z, angle, length in _METACARPALS:
        a = math.radians(angle * anat.finger_spread)
        chain(x * k, z * k, 0.145 * k, (math.sin(a), 0.0, math.cos(a)), (length, 0.2))
    thumb = (math.sin(math.radians(40)), -0.35, math.cos(math.radians(40)))
    chain(0.098 * k, -0.015 * k, 0.122 * k, thumb, (0.18, 0.14))
    return tubes


def _soft_tissue(canvas: _Canvas, anat: WristAnatomy, theta: float,
                 tubes: list[tuple[_Tube, float]]) -> np.ndarray:
    """Projected soft-tissue thickness of forearm, palm, fingers and thumb (already weighted)."""
    c, s = math.cos(theta), math.sin(theta)
    fw, hw = anat.forearm_width, anat.hand_width
    knots = np.array([-3.0, -0.3, -0.02, 0.06, 0.17, 0.40, 0.47, 0.52], dtype=np.float32)
    wx = np.interp(canvas.v, knots, [fw * 1.15, fw, 0.88 * fw, 0.95 * fw, hw, hw, 0.85 * hw, 0.0])
    wz = np.interp(canvas.v, knots, [0.10, 0.095, 0.075, 0.07, 0.068, 0.06, 0.05, 0.0])
    h = np.maximum(np.hypot(wx * c, wz * s), 1e-4)
    thick = 2 * wx * wz / h * np.sqrt(np.maximum(1.0 - (canvas.u / h) ** 2, 0.0))
    field = (_K_SOFT * thick).astype(np.float32)
    for i, (tube, length) in enumerate(tubes):
        is_thumb = i >= len(tubes) - 2
        if i % 2 == 0 and not is_thumb:
            continue  # finger soft tissue wraps the phalanges only; the palm covers metacarpals
        r = 0.036 if is_thumb else 0.03
        soft = replace(tube, r_shaft=r, r_end=r, cortex=0.0, cap=r, length=length + 0.035,
                       k_medulla=_K_SOFT, tip=(tube.tip[0] + tube.direction[0] * 0.025,
                                               tube.tip[1] + tube.direction[1] * 0.025))
        region = canvas.region(soft.tip[0] - soft.direction[0] * length / 2,
                               soft.tip[1] - soft.direction[1] * length / 2, length / 2 + 0.1)
        if region is not None:
            a, d = _local(soft, canvas.u[region], canvas.v[region])
            field[region] = np.maximum(field[region], _tube_thickness(soft, a, d))
    return field


def _bones(canvas: _Canvas, anat: WristAnatomy, theta: float, fracture: bool,
           tubes: list[tuple[_Tube, float]]) -> tuple[np.ndarray, list[Box]]:
    """Bone attenuation of the whole wrist plus the boxes changed by fractures."""
    field = np.zeros_like(canvas.u)
    radius, ulna, styloid = _forearm_tubes(anat, theta)
    radius_break = (anat.radius_fracture, theta) if fracture else None
    ulna_break = (anat.ulna_fracture, theta) if fracture and anat.ulna_fractured else None
    boxes = [_add_tube(canvas, field, radius, 0.6, radius_break),
             _add_tube(canvas, field, ulna, 0.6, ulna_break)]
    _add_tube(canvas, field, styloid, 0.04)
    k = anat.carpal_scale
    c, s = math.cos(theta), math.sin(theta)
    for x, z, v, ax, az, av, tilt in _CARPALS:
        proj = math.hypot(ax * c, az * s)
        _add_ellipsoid(canvas, field, (_project(x, z, theta) * k, v * k), (proj * k, av * k),
                       depth=ax * az / proj * k, angle=math.radians(tilt) * c, cortex=0.004 * k)
    for tube, length in tubes:
        _add_tube(canvas, field, tube, length)
    return field, [b for b in boxes if b is not None]


def project_wrist(
    anatomy: WristAnatomy, theta: float, height: int, width: int, pose: tuple[float, ...],
    fracture: bool,
) -> tuple[np.ndarray, list[Box]]:
    """Attenuation (soft tissue + bone) of one view and the pixel boxes changed by fractures.

    Args:
        anatomy: the study's anatomy; a left wrist (``side == "L"``) is mirrored.
        theta: projection angle of the view in radians.
        height, width: image size in pixels.
        pose: (rotation in radians, scale, x shift, y shift) mapping the arm frame to the film.
        fracture: cut the radius (and the ulna when ``anatomy.ulna_fractured``).

    Returns:
        The float32 (height, width) attenuation and one box ``(x0, y0, x1, y1)`` per cut bone
        that changed any pixel (empty without a fracture).
    """
    canvas = _Canvas(height, width, pose, mirror=anatomy.side == "L")
    tubes = _hand_tubes(anatomy, theta)
    bone, boxes = _bones(canvas, anatomy, theta, fracture, tubes)
    return _soft_tissue(canvas, anatomy, theta, tubes) + bone, boxes
