"""Test-time augmentation (TTA): a model's probability averaged over transformed copies of an image.

Which copies ("views") is decided by the checkpoint, not by the user: the identity, the
horizontal flip (left and right limbs are mirror images of each other, so a mirrored radiograph
is still a plausible radiograph), and, when the model was trained with random rotations of up to
±R degrees (``training_config.augment.rotation`` in its metadata), rotations by +R/2 and -R/2:
well inside the range the model saw, never an angle it did not. Photometric augmentations
(brightness, contrast) are zero-mean jitter and random erasing hides evidence, so neither is
replayed; shifts and zooms are not either, because they can push a fracture out of the frame.

The views' **probabilities** are averaged, not their logits. The mean probability is the
expected prediction over the views, it is what the ensemble (:mod:`fracturescan.ensemble`) and
the study rule (mean of a study's image probabilities) average too, and it keeps a calibrated
model calibrated-ish; averaging logits is a geometric-mean vote that lets one confident view
outweigh the rest.

Views act on the preprocessed uint8 ``(N, H, W)`` pixels, before normalisation, so the torch and
ONNX Runtime backends get identical inputs. A flip is exact; a rotation resamples with the same
:func:`fracturescan.data.transforms.affine` as training (bilinear, zeros outside the image) and
rounds back to uint8 (at most half a grey level off the float result). Cost: one forward pass per
view (2 or 4 times the time of a plain prediction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .data.transforms import affine


@dataclass(frozen=True)
class View:
    """One test-time transform: an optional left-right flip, then a rotation (degrees,
    counter-clockwise as displayed with row 0 at the top)."""

    flip: bool = False
    degrees: float = 0.0

    @property
    def name(self) -> str:
        """Short label, e.g. ``identity``, ``flip``, ``rotate+2.5``."""
        parts = (["flip"] if self.flip else []) + ([f"rotate{self.degrees:+g}"] if self.degrees else [])
        return "+".join(parts) or "identity"


def views_for(training_config: Mapping[str, Any] | None) -> tuple[View, ...]:
    """The views for a model trained with ``training_config`` (the dict stored in its metadata).

    Always the identity and the flip; plus ±half the training rotation range when it was > 0.
    """
    augment = (training_config or {}).get("augment") or {}
    try:
        rotation = abs(float(augment.get("rotation", 0.0) or 0.0))
    except (TypeError, ValueError):  # a hand-edited config: no rotation views rather than a crash
        rotation = 0.0
    views = [View(), View(flip=True)]
    if rotation > 0:
        views += [View(degrees=rotation / 2), View(degrees=-rotation / 2)]
    return tuple(views)


def apply_view(pixels: np.ndarray, view: View) -> np.ndarray:
    """The uint8 ``(N, H, W)`` batch ``pixels`` transformed by ``view`` (a new array)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))
    if view.flip:
        x = torch.flip(x, dims=(-1,))
    if view.degrees:
        n = x.shape[0]
        # affine() samples the input at R(angle) times each output point; with rows growing
        # downwards that turns the displayed image counter-clockwise by angle (checked against
        # numpy's rot90 in the tests).
        angle = torch.full((n,), math.radians(view.degrees))
        zeros, ones = torch.zeros(n), torch.ones(n)
        rotated = affine(x.float().div(255.0).unsqueeze(1), angle, torch.zeros(n, dtype=torch.bool), ones, zeros, zeros)
        x = rotated[:, 0].mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return x.numpy().copy()


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views of one checkpoint and how to average a prediction over them."""

    views: tuple[View, ...]

    __test__ = False  # not a pytest test class, despite the name

    @classmethod
    def for_metadata(cls, metadata: Any) -> "TestTimeAugmentation":
        """The views for a checkpoint's metadata (its ``training_config``)."""
        return cls(views_for(getattr(metadata, "training_config", None)))

    def probabilities(self, predict: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
        """Mean over the views of ``predict(view of pixels)``; ``predict`` maps a uint8
        ``(N, H, W)`` batch to N probabilities (e.g. a Predictor without TTA)."""
        total = np.zeros(len(pixels), dtype=np.float64)
        for view in self.views:
            total += np.asarray(predict(apply_view(pixels, view)), dtype=np.float64)
        return total / len(self.views)

    def describe(self) -> str:
        """One line naming the views, for reports and logs."""
        return f"test-time augmentation: mean probability over {len(self.views)} views (" + \
            ", ".join(v.name for v in self.views) + ")"
