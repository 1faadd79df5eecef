"""Explanations: heatmaps, overlays and the pointing-game localisation check.

``explain_image(predictor, image)`` returns an :class:`Explanation` whose ``heatmap`` is in
[0, 1] at the image's own resolution; ``overlay(image, heatmap, alpha)`` colours it over the
radiograph. Trained checkpoints carry a typical-normal reference (:mod:`.reference`) and get
integrated gradients from it (:mod:`.integrated`); others get Grad-CAM (:mod:`.gradcam`).
Heatmaps are an explanation aid, not a diagnosis.
"""

from .gradcam import (GRAD_CAM, METHOD_LABELS, METHODS, REFERENCE_IG, Explanation, explain_image, grad_cam,
                      heatmap_peak, upsample)
from .layers import MIN_CAM_CELLS, select_cam_layer
from .overlay import DISCLAIMER, add_caption, caption_lines, disclaimer, overlay, save_figure
from .pointing import PointingResult, pointing_game, read_annotations, write_pointing_json

__all__ = [
    "DISCLAIMER", "GRAD_CAM", "METHODS", "METHOD_LABELS", "MIN_CAM_CELLS", "REFERENCE_IG", "Explanation",
    "PointingResult", "add_caption", "caption_lines", "disclaimer", "explain_image", "grad_cam", "heatmap_peak",
    "overlay", "pointing_game", "read_annotations", "save_figure", "select_cam_layer", "upsample",
    "write_pointing_json",
]
