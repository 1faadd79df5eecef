"""Predictor: one loaded checkpoint; predict an image, a study, a folder or a whole MURA tree.

Preprocessing is the checkpoint's contract (:attr:`Checkpoint.preprocessing`), applied with the
same reader and resize as the training cache, so every front end sees identical model inputs.
A study's probability is :func:`fracturescan.decision.study_probability` of its images'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpoint
from .data.images import DEFAULT_MAX_PIXELS, read_image, resize_square
from .data.inputs import CollectedInputs, collect_inputs
from .decision import study_probability
from .devices import resolve_device
from .errors import FracturescanError
from .models.preprocessing import Preprocessing
from .tta import TestTimeAugmentation

if TYPE_CHECKING:
    from .explain.reference import Reference
    from .onnx_runtime import OnnxModel
    from .models.metadata import CheckpointMetadata

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_pixels(
    model: torch.nn.Module,
    pixels: np.ndarray | torch.Tensor,
    *,
    preprocessing: Preprocessing,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Probabilities of abnormality for a uint8 (N, H, W) array of resized images."""
    model.eval()
    out = np.empty(len(pixels), dtype=np.float64)
    starts = range(0, len(pixels), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", disable=not progress, leave=False):
        chunk = pixels[start : start + batch_size]
        batch = torch.from_numpy(np.array(chunk, dtype=np.uint8)).to(device)
        logits = model(preprocessing.normalise(batch))
        out[start : start + len(chunk)] = torch.sigmoid(logits.float()).cpu().numpy().reshape(-1)
    return out


@dataclass(frozen=True)
class ImagePrediction:
    """One image's result; ``error`` is set (and probability None) when it could not be read."""

    path: str
    study_id: str
    probability: float | None
    abnormal: bool | None
    error: str | None = None


@dataclass(frozen=True)
class StudyPrediction:
    """A study's result: mean of its readable images' probabilities."""

    study_id: str
    n_images: int
    probability: float | None
    abnormal: bool | None


class Predictor:
    """A loaded :class:`~fracturescan.checkpoint.Checkpoint`: its network on a device (plus its
    ONNX Runtime model when that backend is chosen), its preprocessing and decision threshold."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device | str = "auto", backend: str = "auto",
                 *, tta: bool = False) -> None:
        """``backend``: ``auto`` uses ONNX Runtime on the CPU when the checkpoint holds a verified
        ``model.onnx`` and onnxruntime is installed, else torch; ``torch`` forces torch; ``onnx``
        forces ONNX Runtime (see :func:`fracturescan.export.select_onnx_model`). ``tta``: average
        every probability over the checkpoint's test-time views (:mod:`fracturescan.tta`).

        Raises:
            CheckpointError: weights, reference or ONNX export missing or tampered with.
        """
        from .export import select_onnx_model

        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        # The torch model stays loaded either way: heatmaps need its gradients.
        self.model = checkpoint.load_model(self.device).eval()
        self.onnx_model: OnnxModel | None = select_onnx_model(checkpoint, backend, self.device)
        #: "onnx" (ONNX Runtime computes probabilities) or "torch".
        self.backend = "torch" if self.onnx_model is None else "onnx"
        for ckpt in (checkpoint, *checkpoint.members):
            ckpt.reference  # noqa: B018  (verify it now: a tampered file fails at load, not mid-study)
        #: Test-time augmentation (:mod:`fracturescan.tta`) applied by :meth:`probabilities`, or None.
        self.tta: TestTimeAugmentation | None = TestTimeAugmentation.for_metadata(checkpoint.metadata) if tta else None

    @classmethod
    def from_checkpoint(cls, path: "Path | str | Checkpoint", device: str = "auto", backend: str = "auto",
                        tta: bool = False) -> "Predictor":
        """Load a checkpoint directory, a run directory holding ``best/``, or an open Checkpoint."""
        return cls(Checkpoint.open(path), device, backend, tta=tta)

    @property
    def metadata(self) -> "CheckpointMetadata":
        """The checkpoint's metadata."""
        return self.checkpoint.metadata

    @property
    def preprocessing(self) -> Preprocessing:
        """The checkpoint's input contract."""
        return self.checkpoint.preprocessing

    @property
    def reference(self) -> "Reference | None":
        """The checkpoint's verified explanation reference, if it has one."""
        return self.checkpoint.reference

    @property
    def threshold(self) -> float:
        """Decision threshold stored in the checkpoint (chosen on the hold-out)."""
        return self.checkpoint.threshold

    @property
    def image_size(self) -> int:
        """Square input size the model was trained at."""
        return self.preprocessing.input_size

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """A float [0,1] image from :func:`read_image` → the uint8 model input."""
        return resize_square(image, self.image_size)

    def probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities for preprocessed uint8 (N, size, size) images (averaged over the
        test-time views when the predictor was made with ``tta=True``)."""
        if self.tta is not None:
            return self.tta.probabilities(lambda view: self._probabilities(view, batch_size), pixels)
        return self._probabilities(pixels, batch_size)

    def _probabilities(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        if self.onnx_model is not None:
            return self.onnx_model.probabilities(pixels, self.preprocessing, batch_size=batch_size)
        return predict_pixels(self.model, pixels, preprocessing=self.preprocessing, device=self.device,
                              batch_size=batch_size)

    def predict_image(self, source: Path | str | bytes, name: str | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> float:
        """Probability of abnormality for one image file or its bytes."""
        pixels = self.preprocess(read_image(source, max_pixels=max_pixels, name=name))
        return float(self.probabilities(pixels[None])[0])

    def predict_paths(self, paths: Iterable[Path | str] | CollectedInputs, batch_size: int = 32,
                      progress: bool = True) -> tuple[list[ImagePrediction], list[StudyPrediction]]:
        """Predict every image under ``paths`` (or already :func:`collect_inputs`-grouped inputs);
        unreadable files are reported, not fatal."""
        pairs = list(paths if isinstance(paths, CollectedInputs) else collect_inputs(paths))
        images: list[ImagePrediction] = []
        for start in tqdm(range(0, len(pairs), batch_size), desc="predicting", unit="batch",
                          disable=not progress or len(pairs) <= batch_size):
            chunk = pairs[start : start + batch_size]
            arrays, readable, failed = [], [], {}
            for study_id, path in chunk:
                try:
                    arrays.append(self.preprocess(read_image(path)))
                    readable.append((study_id, path))
                except FracturescanError as exc:
                    failed[path] = str(exc)
                    log.info("Skipped %s: %s", path, exc)  # reported in the results, not an alarm
            probs = self.probabilities(np.stack(arrays)) if arrays else np.empty(0)
            by_path = {path: float(p) for (_, path), p in zip(readable, probs)}
            for study_id, path in chunk:
                p = by_path.get(path)
                images.append(ImagePrediction(str(path), study_id, p, None if p is None else p >= self.threshold,
                                              failed.get(path)))
        return images, self.aggregate(images)

    def aggregate(self, images: list[ImagePrediction]) -> list[StudyPrediction]:
        """Study results (mean probability of readable images), in first-appearance order."""
        grouped: dict[str, list[ImagePrediction]] = {}
        for item in images:
            grouped.setdefault(item.study_id, []).append(item)
        studies = []
        for study_id, items in grouped.items():
            probs = [i.probability for i in items if i.probability is not None]
            p = study_probability(probs)
            studies.append(StudyPrediction(study_id, len(probs), p, None if p is None else p >= self.threshold))
        return studies
