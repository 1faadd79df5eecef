"""Heatmaps of an ensemble: the mean of its members' heatmaps.

An ensemble's probability is the mean of its members' probabilities, so its explanation is the
mean of theirs: each member is explained exactly as it would be on its own (its own explained
layer, its own typical-normal reference and colour scale, see :mod:`.gradcam`), each map is
brought to the image's resolution in [0, 1], and the maps are averaged. A region lights up fully
only where every member saw strong evidence; one member's evidence alone shows at 1/N strength.
The method is the same for all members: integrated gradients when every member has a reference
(``auto``), else Grad-CAM for all, so the maps being averaged mean the same thing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..errors import FracturescanError
from ..models.ensemble import EnsembleNet
from .gradcam import GRAD_CAM, REFERENCE_IG, Explanation, attribute, heatmap_peak, upsample
from .layers import select_cam_layer

if TYPE_CHECKING:
    from ..inference import Predictor


def is_ensemble_model(model: nn.Module) -> bool:
    """True for an :class:`~fracturescan.models.ensemble.EnsembleNet`."""
    return isinstance(model, EnsembleNet)


def explain_ensemble(predictor: "Predictor", image: np.ndarray, inputs: torch.Tensor, *,
                     method: str = "auto") -> Explanation:
    """The mean of the member heatmaps of ``image`` (normalised model input ``inputs``).

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
