"""The "typical normal" reference that integrated-gradients heatmaps are measured against.

A heatmap should show what makes THIS image look more abnormal than a normal one. Grad-CAM
answers a different question (which features carry positive evidence at all) and, on small
models trained from scratch, often lights up anatomy that every image has — on our phantom
models, the forearm at the image's lower edge — instead of the fracture. The reference is the
mean activation of the explained layer over normal training images: attributions are then the
layer-wise integrated gradients from that reference to the image (see :mod:`.integrated`), which
sum to ``logit(image) - logit(reference)``.

``explain_reference.safetensors`` sits in the checkpoint directory beside ``model.safetensors``;
its SHA-256 and layer are recorded in ``metadata.json`` (``reference_sha256``,
``reference_layer``) and checked on load, like the ONNX export. It is written at the end of
training; checkpoints without it fall back to Grad-CAM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import atomic_path, sha256_file
from ..models.checkpoint import read_metadata, resolve_checkpoint_dir, update_metadata, verify_file
from ..models.metadata import CheckpointMetadata
from ..models.preprocessing import Preprocessing
from .layers import select_cam_layer

log = logging.getLogger(__name__)

REFERENCE_FILE = "explain_reference.safetensors"
#: Normal images averaged into the reference (a random subset when there are more).
MAX_REFERENCE_IMAGES = 512
#: Abnormal images whose strongest heatmap cell sets the colour scale (see :func:`calibrate`).
MAX_SCALE_IMAGES = 64


@dataclass(frozen=True)
class Reference:
    """Mean activation ``(C, h, w)`` of ``layer`` over ``n_images`` normal images at ``input_size``.

    ``abnormal_peak``: the median, over abnormal images, of their strongest attribution cell. A
    heatmap is coloured relative to it (full colour = as strong as a typical abnormal image's
    strongest region), so a normal image's weak evidence stays faint instead of being stretched
    to full colour. None: each heatmap is scaled to its own maximum.
    """

    layer: str
    input_size: int
    activation: torch.Tensor
    n_images: int
    abnormal_peak: float | None = None


def _capture(layer: nn.Module, store: list[torch.Tensor]):
    return layer.register_forward_hook(lambda _m, _i, out: store.append(out.detach().float()))


def _subsample(pixels: torch.Tensor | np.ndarray, limit: int, seed: int) -> torch.Tensor:
    """``pixels`` as a tensor, cut to a seeded random ``limit`` images (kept in their order)."""
    pixels = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, torch.Tensor) else pixels)
    if pixels.ndim > 0 and len(pixels) > limit:
        keep = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:limit]
        pixels = pixels[keep.sort().values.to(pixels.device)]
    return pixels


@torch.no_grad()
def compute_reference(model: nn.Module, pixels: torch.Tensor | np.ndarray, *, preprocessing: Preprocessing,
                      batch_size: int = 64, seed: int = 0) -> Reference:
    """Average the explained layer's activation over uint8 ``(N, size, size)`` normals, prepared
    with the checkpoint's ``preprocessing`` contract.

    The layer is the one :func:`~fracturescan.explain.layers.select_cam_layer` picks for this
    model and input size, so the reference always matches the heatmap's grid.
    """
    pixels = _subsample(pixels, MAX_REFERENCE_IMAGES, seed)
    if pixels.ndim != 3 or len(pixels) == 0:
        raise ValueError(f"compute_reference needs a non-empty (N, H, W) uint8 batch, got {tuple(pixels.shape)}")
    model.eval()
    device = next(model.parameters()).device
    input_size = preprocessing.input_size
    name, layer = select_cam_layer(model, input_size, preprocessing.channels)
    total: torch.Tensor | None = None
    store: list[torch.Tensor] = []
    handle = _capture(layer, store)
    try:
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start:start + batch_size].to(device)
            model(preprocessing.normalise(chunk))
            part = store.pop().sum(0)
            total = part if total is None else total + part
    finally:
        handle.remove()
    return Reference(name, int(input_size), (total / len(pixels)).cpu().contiguous(), int(len(pixels)))


def calibrate(model: nn.Module, reference: Reference, abnormal: torch.Tensor | np.ndarray, *,
              preprocessing: Preprocessing, seed: int = 0) -> Reference:
    """Return ``reference`` with ``abnormal_peak`` measured on uint8 ``(N, H, W)`` abnormal images."""
    from .integrated import integrated_gradients

    pixels = _subsample(abnormal, MAX_SCALE_IMAGES, seed)
    if len(pixels) == 0:
        return reference
    device = next(model.parameters()).device
    name, layer = select_cam_layer(model, reference.input_size, preprocessing.channels)
    if name != reference.layer:
        raise ValueError(f"reference is for {reference.layer}, but the model explains {name}")
    peaks = []
    for i in range(len(pixels)):
        x = preprocessing.normalise(pixels[i:i + 1].to(device))
        attribution, _, _ = integrated_gradients(model, layer, x, reference.activation)
        peaks.append(float(attribution.clamp_min(0).max()))
    peak = float(np.median(peaks))
    return Reference(reference.layer, reference.input_size, reference.activation, reference.n_images,
                     peak if peak > 0 else None)


def save_reference(directory: Path | str, reference: Reference) -> Path:
    """Write the reference into a checkpoint directory (atomically) and record its SHA-256."""
    from safetensors.torch import save_file

    directory = resolve_checkpoint_dir(directory)
    target = directory / REFERENCE_FILE
    info = {"layer": reference.layer, "input_size": str(reference.input_size), "n_images": str(reference.n_images)}
    if reference.abnormal_peak is not None:
        info["abnormal_peak"] = repr(float(reference.abnormal_peak))
    with atomic_path(target) as tmp:
        save_file({"activation": reference.activation}, str(tmp), metadata=info)
    update_metadata(directory, reference_sha256=sha256_file(target), reference_layer=reference.layer)
    log.info("explanation reference (%s, %d normal images) saved to %s", reference.layer, reference.n_images, target)
    return target


def load_reference(directory: Path | str, meta: CheckpointMetadata | None = None) -> Reference | None:
    """The checkpoint's verified reference, or None when it has none. ``meta``: the directory's
    already parsed metadata (:attr:`fracturescan.checkpoint.Checkpoint.reference` passes it).

    Raises:
        CheckpointError: the file is missing although recorded, does not match its SHA-256, or
            is not a reference file.
    """
    from safetensors import safe_open

    if meta is None:
        directory = resolve_checkpoint_dir(directory)
        meta = read_metadata(directory)
    if not meta.reference_sha256:
        return None
    path = Path(directory) / REFERENCE_FILE
    verify_file(path, meta.reference_sha256, "reference_sha256", "Re-copy the checkpoint.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            info = handle.metadata() or {}
            activation = handle.get_tensor("activation")
        peak = float(info["abnormal_peak"]) if "abnormal_peak" in info else None
        return Reference(str(info["layer"]), int(info["input_size"]), activation, int(info["n_images"]), peak)
    except Exception as exc:  # safetensors errors, missing keys
        raise CheckpointError(f"{path} is not a valid explanation reference ({exc})") from exc


def build_reference(directory: Path | str, data: Path | str, *, body_part: str = "all",
                    device: str = "auto") -> Reference:
    """Compute, calibrate and store the reference of an existing checkpoint from ``data``'s
    ``train`` split (for checkpoints trained before fracturescan wrote one, or on other data).

    Normals give the reference (up to :data:`MAX_REFERENCE_IMAGES`), abnormal images the colour
    scale (up to :data:`MAX_SCALE_IMAGES`). Use the data the model was trained on.

    Raises:
        DatasetError: the split lacks normal images (or cannot be read).
    """
    from ..data.cache import build_cache
    from ..data.sources import open_dataset
    from ..devices import resolve_device
    from ..errors import DatasetError
    from ..models.builder import load_checkpoint

    directory = resolve_checkpoint_dir(directory)
    model, meta = load_checkpoint(directory, map_location=resolve_device(device))
    contract = Preprocessing.from_metadata(meta)
    train = open_dataset(Path(data), body_part).split("train")
    rng = np.random.default_rng(0)

    def pixels(label: int, limit: int) -> np.ndarray:
        records = [r for r in train if r.label == label]
        if len(records) > limit:
            records = [records[i] for i in sorted(rng.choice(len(records), limit, replace=False))]
        if not records:
            return np.zeros((0, contract.input_size, contract.input_size), np.uint8)
        return np.array(build_cache(records, contract.input_size, None, desc=f"reading label {label}").pixels)

    normals = pixels(0, MAX_REFERENCE_IMAGES)
    if len(normals) == 0:
        raise DatasetError(f"{data} has no normal image in its train split: the reference needs some.")
    reference = compute_reference(model, normals, preprocessing=contract)
    reference = calibrate(model, reference, pixels(1, MAX_SCALE_IMAGES), preprocessing=contract)
    save_reference(directory, reference)
    return reference
