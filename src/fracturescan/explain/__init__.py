"""Grad-CAM explanations: heatmaps, overlays and the pointing-game localisation check.

``explain_image(predictor, image)`` returns an :class:`Explanation` whose ``heatmap`` is in
[0, 1] at the image's own resolution; ``overlay(image, heatmap, alpha)`` colours it over the
radiograph. Heatmaps are an explanation aid, not a diagnosis.
"""

from .gradcam import Explanation, explain_image, grad_cam, heatmap_peak, upsample
from .layers import MIN_CAM_CELLS, select_cam_layer
from .overlay import DISCLAIMER, add_caption, caption_lines, overlay, save_figure
from .pointing import PointingResult, pointing_game, read_annotations, write_pointing_json

__all__ = [
    "DISCLAIMER", "MIN_CAM_CELLS", "Explanation", "PointingResult", "add_caption", "caption_lines",
    "explain_image", "grad_cam", "heatmap_peak", "overlay", "pointing_game", "read_annotations",
    "save_figure", "select_cam_layer", "upsample", "write_pointing_json",
]
