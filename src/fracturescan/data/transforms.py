"""Tensor preprocessing and batched augmentation.

Both run on whole batches on the training device (CPU or GPU), so the input path costs a few
tensor ops per batch instead of per-image PIL work. Inference uses :func:`normalise` with the
mean/std stored in the checkpoint, on the same uint8 pixels the cache holds, so training, CLI,
app and API see identical inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the settings live with the rest of the training configuration
    from ..config import AugmentConfig


def normalise(
    pixels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels: int = 3,
) -> torch.Tensor:
    """uint8 (N, H, W) or float (N, 1, H, W) in [0, 1] → normalised float (N, channels, H, W).

    ``mean`` and ``std`` come from the checkpoint's preprocessing contract
    (:class:`fracturescan.models.preprocessing.Preprocessing`), never from a default here.
    """
    x = pixels.float().div(255.0).unsqueeze(1) if pixels.dtype == torch.uint8 else pixels.float()
    x = x.expand(-1, channels, -1, -1)
    m = torch.tensor(mean[:channels], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std[:channels], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def affine(x: torch.Tensor, angle: torch.Tensor, flip: torch.Tensor, zoom: torch.Tensor,
           shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
    """Flip, rotate, zoom and shift a float (N, 1, H, W) batch in one bilinear resampling.

    Per image: ``angle`` in radians, ``flip`` (bool) mirrors left-right, ``zoom`` > 1 zooms in,
    shifts are in grid units (the image side spans 2). Pixels from outside the image are 0.
    Training augmentation and test-time augmentation (:mod:`fracturescan.tta`) both use it, so
    a test-time view is exactly a transform the model saw in training.
    """
    sign = torch.where(flip, -1.0, 1.0)
    # affine_grid maps OUTPUT coordinates to input ones, so zooming in by ``zoom`` divides them.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # One affine grid does flip, rotation, zoom and shift together (the flip negates the x input
    # coordinate).
    theta = torch.stack(
        [torch.stack([cos * sign, -sin, shift_x], 1), torch.stack([sin * sign, cos, shift_y], 1)],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(pixels: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly flip, rotate, shift, zoom and change brightness/contrast of a uint8 (N, H, W) batch.

    Returns float (N, 1, H, W) in [0, 1]. Random numbers are drawn on the CPU from ``generator``
    so a seed gives the same augmentation on any device.
    """
    n = pixels.shape[0]
    x = pixels.float().div(255.0).unsqueeze(1)

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(x.device)

    flip = (torch.rand(n, generator=generator) < cfg.hflip).to(x.device)
    angle = uniform(-cfg.rotation, cfg.rotation) * (math.pi / 180.0)
    # Drawn only when enabled, so runs without shift/zoom keep their random stream unchanged.
    zoom = uniform(1 - cfg.scale, 1 + cfg.scale) if cfg.scale > 0 else torch.ones_like(angle)
    shift_x, shift_y = (
        (uniform(-cfg.translate, cfg.translate) * 2, uniform(-cfg.translate, cfg.translate) * 2)
        if cfg.translate > 0 else (torch.zeros_like(angle), torch.zeros_like(angle))
    )
    x = affine(x, angle, flip, zoom, shift_x, shift_y)
    contrast = uniform(1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
    brightness = uniform(-cfg.brightness, cfg.brightness).view(n, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)
    return _random_erase(x, cfg.erase, generator) if cfg.erase > 0 else x


def _random_erase(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Blank one random rectangle per selected image (batched, no Python loop over images)."""
    n, _, h, w = x.shape
    draw = lambda: torch.rand(n, generator=generator)  # noqa: E731
    chosen, area, log_aspect, cy, cx, fill = draw() < p, 0.02 + 0.18 * draw(), (draw() * 2 - 1) * 1.2, draw(), draw(), draw()
    aspect = torch.exp(log_aspect)
    rh = (torch.sqrt(area * aspect) * h).clamp(1, h)
    rw = (torch.sqrt(area / aspect) * w).clamp(1, w)
    top, left = cy * (h - rh), cx * (w - rw)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + rh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + rw).view(n, 1, 1)) & chosen.view(n, 1, 1))
    inside = inside.unsqueeze(1).to(x.device)
    return torch.where(inside, fill.view(n, 1, 1, 1).to(x.device, x.dtype), x)
