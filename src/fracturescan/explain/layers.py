"""Choosing the Grad-CAM target layer so the heatmap has enough cells to localise anything.

Grad-CAM's resolution is the target layer's grid. DenseNet121's final map (``cam_layer``) has
stride 32: 7 x 7 cells at its native 224 px, but only 2 x 2 at 64 px, where every upsampled
peak lands in a corner tile and no fracture near the middle of the image can ever be pointed
at. The rule here keeps ``cam_layer`` whenever its grid has at least :data:`MIN_CAM_CELLS` cells
per side (the 7 x 7 of the canonical setting) and otherwise moves to the deepest trunk stage
that still has that many, e.g. ``denseblock2`` (8 x 8) for a 64-px DenseNet121. Deeper stages
are more class-specific, so we never go shallower than needed.
"""

from __future__ import annotations

import logging
import weakref

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Fewest feature cells per side a Grad-CAM target layer may have (DenseNet121 at 224 px: 7).
MIN_CAM_CELLS = 7

# model -> {(input size, min cells): (name, layer)}; weak so unloaded models are freed.
_CHOICES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], tuple[str, nn.Module]]]" = (
    weakref.WeakKeyDictionary()
)


def _stages(features: nn.Module) -> dict[str, nn.Module]:
    """Trunk stages: modules at most two levels below ``features``, skipping in-place ones.

    Two levels reach DenseNet's blocks (``features.features.denseblockN``) and ResNet's
    ``layerN`` with its bottlenecks. In-place modules are skipped because their output tensor
    is overwritten by the next op, which corrupts the gradient captum reads from it.
    """
    stages = {}
    for name, module in features.named_modules():
        if name and name.count(".") <= 1 and not getattr(module, "inplace", False):
            stages[name] = module
    return stages


@torch.no_grad()
def _grid_order(model: nn.Module, stages: dict[str, nn.Module], size: int,
                channels: int) -> list[tuple[str, int, int]]:
    """(name, h, w) of every stage called exactly once, in the order its output is produced."""
    calls: list[tuple[str, int, int]] = []
    counts: dict[str, int] = {}

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                calls.append((name, int(output.shape[2]), int(output.shape[3])))
        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in stages.items()]
    try:
        device = next(model.parameters()).device
        model.features(torch.zeros(1, channels, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return [c for c in calls if counts[c[0]] == 1]


def select_cam_layer(model: nn.Module, input_size: int, channels: int = 3,
                     min_cells: int = MIN_CAM_CELLS) -> tuple[str, nn.Module]:
    """``("cam_layer", model.cam_layer)`` if its grid is fine enough, else the deepest stage that is.

    ``model`` is a :class:`~fracturescan.models.registry.FractureNet` (``features`` +
    ``cam_layer``). The choice is cached per model and input size. When no stage reaches
    ``min_cells`` (a tiny input), the deepest stage with the largest grid wins.
    """
    cache = _CHOICES.setdefault(model, {})
    key = (int(input_size), int(min_cells))
    if key in cache:
        return cache[key]
    stages = _stages(model.features)
    order = _grid_order(model, stages, int(input_size), int(channels))
    cam_name = next((n for n, m in stages.items() if m is model.cam_layer), None)
    grids = {n: min(h, w) for n, h, w in order}
    if cam_name is None or grids.get(cam_name, 0) >= min_cells or not order:
        choice = ("cam_layer", model.cam_layer)
    else:
        fine = [n for n, _, _ in order if grids[n] >= min_cells]
        best = fine[-1] if fine else max(reversed(order), key=lambda c: min(c[1], c[2]))[0]
        choice = (best, stages[best])
        log.info("Grad-CAM: cam_layer has a %dx%d grid at %d px; using %s (%dx%d) instead",
                 grids[cam_name], grids[cam_name], input_size, best, grids[best], grids[best])
    cache[key] = choice
    return choice
