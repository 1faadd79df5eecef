"""Heatmaps for the abnormal logit: Grad-CAM (captum's ``LayerGradCam``) or, when the checkpoint
carries a typical-normal reference, layer-wise integrated gradients from it (:mod:`.integrated`).

Grad-CAM (Selvaraju et al., 2017) weights each channel of a convolutional feature map by the
spatial mean of the gradient of the target logit with respect to it, sums the weighted channels
and keeps the positive part: the regions whose features push the prediction towards "abnormal".

The target layer is :attr:`FractureNet.cam_layer`, the *activated* final feature map (for
DenseNet121 the non-inplace ReLU after ``norm5``), unless its grid is too coarse to localise
anything at the model's input size (see :mod:`.layers`: a 64-px DenseNet121 has a 2 x 2 final
grid, so a deeper-but-finer stage is used). The map is upsampled straight to the original
image size: :func:`~fracturescan.data.images.resize_square` squashes the whole image into the
model's square input without cropping or padding, so a plain resize of the feature grid maps it
back onto the original pixels.

An ensemble checkpoint is explained by its members: the mean of their heatmaps
(:func:`explain_ensemble`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FracturescanError
from ..models.ensemble import EnsembleNet
from .layers import select_cam_layer

if TYPE_CHECKING:
    from ..inference import Predictor

log = logging.getLogger(__name__)

GRAD_CAM = "grad-cam"
REFERENCE_IG = "reference-ig"
#: What ``method="auto"`` means: integrated gradients when the checkpoint has a reference for
#: the explained layer, else Grad-CAM.
METHODS = ("auto", GRAD_CAM, REFERENCE_IG)
#: How each method is named wherever a heatmap is shown.
METHOD_LABELS = {GRAD_CAM: "Grad-CAM", REFERENCE_IG: "integrated gradients vs. typical normal"}

# captum attaches forward hooks to the shared model for the duration of one call; two threads
# (e.g. two Streamlit sessions sharing one cached Predictor) must not interleave those hooks.
_HOOK_LOCK = threading.Lock()


@dataclass(frozen=True)
class Explanation:
    """Grad-CAM of one image for the abnormal class.

    Attributes:
        probability: calibrated probability of abnormality (``sigmoid(logit / T)``, the checkpoint's
            temperature ``T``; the plain sigmoid for uncalibrated checkpoints).
        logit: the raw abnormal logit the heatmap explains.
        heatmap: float32 (H, W) in [0, 1] at the ORIGINAL image resolution; 0 = no evidence.
        model_heatmap: float32 (size, size) in [0, 1] at the model's input resolution.
        cam: float32 (h, w) raw Grad-CAM on the feature grid (not normalised, >= 0).
        peak: (row, col) of the heatmap maximum in original pixels, or None when the map is
            all zero (no region supports "abnormal").
        layer: name of the target layer (``cam_layer`` or a trunk stage such as
            ``0.denseblock2``).
        method: :data:`GRAD_CAM` or :data:`REFERENCE_IG` (integrated gradients from the
            checkpoint's typical-normal reference, see :mod:`.integrated`).
        reference_logit: the reference's logit (``REFERENCE_IG`` only): the map divides
            ``logit - reference_logit`` among the grid cells.
    """

    probability: float
    logit: float
    heatmap: np.ndarray
    model_heatmap: np.ndarray
    cam: np.ndarray
    peak: tuple[int, int] | None
    layer: str = "cam_layer"
    method: str = GRAD_CAM
    reference_logit: float | None = None


def _layer_grad_cam() -> type:
    try:
        from captum.attr import LayerGradCam
    except ImportError as exc:  # captum is a core dependency; this guards broken installs
        raise FracturescanError("Grad-CAM needs the 'captum' package: pip install captum") from exc
    return LayerGradCam


def grad_cam(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw Grad-CAM maps ``(N, h, w)`` and logits ``(N,)`` of a one-logit model.

    ``model(inputs)`` must return one logit per image, shape ``(N,)``. The model is put in eval
    mode (dropout/batch-norm statistics frozen, as at prediction time) and left in eval mode;
    captum removes its hooks before returning, and no parameter gradient is accumulated
    (captum differentiates with ``torch.autograd.grad`` w.r.t. the layer output only).
    """
    model.eval()
    logits_seen: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        # Keep the logits of the very forward pass that produced the gradients, so the
        # probability reported is exactly the one explained (no second forward pass).
        out = model(x)
        logits_seen.append(out.detach())
        return out

    cam_cls = _layer_grad_cam()
    with _HOOK_LOCK, torch.enable_grad():
        attribution = cam_cls(forward, layer).attribute(inputs, target=None, relu_attributions=True)
    return attribution[:, 0].detach(), logits_seen[-1].reshape(-1)


def upsample(cam: np.ndarray | torch.Tensor, shape: tuple[int, int], full_scale: float | None = None) -> np.ndarray:
    """Bilinearly resize a (h, w) CAM to ``shape`` and scale it to [0, 1] by its maximum.

    ``align_corners=False`` treats each feature cell as covering an equal tile of the image
    (the geometry of a strided CNN on a squashed image). Scaling by the maximum, not min-max,
    keeps 0 meaning "no positive evidence"; an all-zero CAM stays all zero. With
    ``full_scale``, the map is divided by ``max(its maximum, full_scale)`` instead, so values
    below ``full_scale`` never reach full colour.
    """
    t = torch.as_tensor(np.asarray(cam, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)[0, 0]
    up = up.clamp_min(0.0)
    top = max(float(up.max()), float(full_scale or 0.0))
    return (up / top if top > 0 else up).numpy().astype(np.float32)


def heatmap_peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the heatmap maximum, or None for an all-zero map.

    Bilinear upsampling of a coarse grid clamps at the borders, so the maximum is often a flat
    plateau (a whole corner tile at stride 32); ``argmax`` would then return the plateau's
    top-left pixel, a location biased towards the image corner. The centre of the maximal
    pixels is the unbiased choice; it equals ``argmax`` when the maximum is unique.
    """
    top = float(heatmap.max()) if heatmap.size else 0.0
    if top <= 0:
        return None
    rows, cols = np.nonzero(heatmap >= top * (1.0 - 1e-6))
    row, col = int(round(rows.mean())), int(round(cols.mean()))
    if heatmap[row, col] < top * (1.0 - 1e-6):  # a non-convex plateau: fall back to a true max
        row, col = int(rows[0]), int(cols[0])
    return row, col


def check_method(method: str) -> None:
    """Raise :class:`FracturescanError` unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise FracturescanError(f"Unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")


def _reference_for(predictor: "Predictor", name: str):
    ref = predictor.reference
    if ref is None or ref.layer != name or ref.input_size != predictor.image_size:
        return None
    return ref


def explain_image(predictor: "Predictor", image: np.ndarray, *, layer: nn.Module | None = None,
                  method: str = "auto") -> Explanation:
    """Heatmap of the abnormal logit for one float [0, 1] (H, W) image from ``read_image``.

    ``method``: ``"auto"`` (integrated gradients from the checkpoint's typical-normal reference
    when it has one for the explained layer, else Grad-CAM), ``"grad-cam"`` or
    ``"reference-ig"`` (an error without a reference). Preprocessing is the predictor's own (the
    same squash-resize and normalisation as prediction), so the probability matches
    :meth:`Predictor.predict_image` with the torch backend. The heatmap has the image's shape.
    ``layer`` overrides the target layer chosen by
    :func:`~fracturescan.explain.layers.select_cam_layer` (Grad-CAM only).

    An ensemble is explained by its members: the mean of their heatmaps (:func:`explain_ensemble`).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"explain_image expects a 2-D grayscale image, got shape {image.shape}")
    check_method(method)
    contract = predictor.preprocessing
    pixels = torch.from_numpy(predictor.preprocess(image)[None]).to(predictor.device)
    inputs = contract.normalise(pixels)
    if isinstance(predictor.model, EnsembleNet):
        return explain_ensemble(predictor, image, inputs, method=method)
    if layer is None:
        name, layer = select_cam_layer(predictor.model, contract.input_size, contract.channels)
        reference = _reference_for(predictor, name) if method != GRAD_CAM else None
    else:
        name = "cam_layer" if layer is predictor.model.cam_layer else type(layer).__name__
        reference = None
    if method == REFERENCE_IG and reference is None:
        raise FracturescanError(
            "This checkpoint has no explanation reference for its heatmap layer (checkpoints "
            "trained before fracturescan wrote one): use --method grad-cam.")
    cam, logit, reference_logit, full_scale = attribute(predictor.model, layer, inputs, reference)
    heatmap = upsample(cam, image.shape, full_scale)
    return Explanation(
        # The checkpoint's calibrated probability, as every other front end shows it.
        probability=float(predictor.rule.probabilities([logit])[0]),
        logit=logit,
        heatmap=heatmap,
        model_heatmap=upsample(cam, (predictor.image_size, predictor.image_size), full_scale),
        cam=cam,
        peak=heatmap_peak(heatmap),
        layer=name,
        method=GRAD_CAM if reference is None else REFERENCE_IG,
        reference_logit=reference_logit,
    )


def attribute(model: nn.Module, layer: nn.Module, inputs: torch.Tensor,
              reference=None) -> tuple[np.ndarray, float, float | None, float | None]:
    """(raw map on ``layer``'s grid, logit, reference logit, colour full scale) for ONE image:
    integrated gradients from ``reference`` (a :class:`~.reference.Reference`) when given, else
    Grad-CAM (then the reference logit and full scale are None)."""
    if reference is not None:
        from .integrated import integrated_gradients

        with _HOOK_LOCK:
            attribution, logit, reference_logit = integrated_gradients(model, layer, inputs, reference.activation)
        return attribution.clamp_min(0.0).float().cpu().numpy(), logit, reference_logit, reference.abnormal_peak
    cams, logits = grad_cam(model, layer, inputs)
    return cams[0].float().cpu().numpy(), float(logits[0]), None, None


def explain_ensemble(predictor: "Predictor", image: np.ndarray, inputs: torch.Tensor, *,
                     method: str = "auto") -> Explanation:
    """An ensemble's explanation: the mean of its members' heatmaps of ``image`` (normalised
    model input ``inputs``).

    Each member is explained exactly as it would be on its own (its own layer, typical-normal
    reference and colour scale), each map brought to the image's resolution in [0, 1], and the
    maps averaged: a region lights up fully only where every member saw strong evidence. The
    method is the same for all members (integrated gradients when every member has a reference,
    else Grad-CAM for all), so the maps being averaged mean the same thing.

    ``probability`` and ``logit`` are the ensemble's own (the same as its prediction); ``cam`` is
    the mean member map at the model's input resolution; ``layer`` lists the members' layers.
    """
    net: EnsembleNet = predictor.model
    size, channels = predictor.preprocessing.input_size, predictor.preprocessing.channels
    layers = [select_cam_layer(member, size, channels) for member in net.members]
    refs = [ref if ref is not None and ref.layer == name and ref.input_size == size else None
            for ref, (name, _) in zip((m.reference for m in predictor.checkpoint.members), layers)]
    use_reference = method != GRAD_CAM and all(ref is not None for ref in refs)
    if method == REFERENCE_IG and not use_reference:
        raise FracturescanError("Not every member of this ensemble has an explanation reference for its "
                                "heatmap layer: use --method grad-cam.")
    heatmaps, model_maps, logits = [], [], []
    for member, (_, layer), ref in zip(net.members, layers, refs):
        cam, logit, _, full_scale = attribute(member, layer, inputs, ref if use_reference else None)
        heatmaps.append(upsample(cam, image.shape, full_scale))
        model_maps.append(upsample(cam, (size, size), full_scale))
        logits.append(logit)
    z = torch.tensor(logits, dtype=torch.float32).view(-1, 1) / net.temperatures.detach().cpu().view(-1, 1)
    logit = float(EnsembleNet.combine(z)[0])
    heatmap = np.mean(heatmaps, axis=0).astype(np.float32)
    return Explanation(
        probability=float(torch.sigmoid(torch.tensor(logit))), logit=logit, heatmap=heatmap,
        model_heatmap=np.mean(model_maps, axis=0).astype(np.float32),
        cam=np.mean(model_maps, axis=0).astype(np.float32), peak=heatmap_peak(heatmap),
        layer="mean of members: " + ", ".join(name for name, _ in layers),
        method=REFERENCE_IG if use_reference else GRAD_CAM)
