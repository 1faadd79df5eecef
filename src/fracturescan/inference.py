"""Predictor: load a checkpoint once; predict an image, a study, a folder or a whole MURA tree.

Preprocessing is rebuilt from the checkpoint's metadata (input size, normalisation), and uses the
same reader and resize as the training cache, so every front end sees identical model inputs.
A study's probability is the mean of its images' probabilities (MURA paper).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.inputs import CollectedInputs, collect_inputs
from .data.images import DEFAULT_MAX_PIXELS, read_image, resize_square
from .data.transforms import normalise
from .errors import FracturescanError
from .models.checkpoint import load_checkpoint, resolve_checkpoint_dir

if TYPE_CHECKING:
    from .export import OnnxModel

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise FracturescanError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FracturescanError("Device 'cuda' was requested but no CUDA GPU is available: use --device cpu.")
    return device


@torch.no_grad()
def predict_pixels(
    model: torch.nn.Module,
    pixels: np.ndarray | torch.Tensor,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Probabilities of abnormality for a uint8 (N, H, W) array of preprocessed images."""
    model.eval()
    out = np.empty(len(pixels), dtype=np.float64)
    starts = range(0, len(pixels), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", disable=not progress, leave=False):
        chunk = pixels[start : start + batch_size]
        batch = torch.from_numpy(np.array(chunk, dtype=np.uint8)).to(device)
        logits = model(normalise(batch, mean, std))
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
    """A loaded model plus its preprocessing and decision threshold."""

    def __init__(self, model: torch.nn.Module, metadata, device: torch.device, onnx_model: "OnnxModel | None" = None) -> None:
        self.model = model.to(device).eval()
        self.metadata = metadata
        self.device = device
        # The torch model stays loaded either way: Grad-CAM needs its gradients.
        self.onnx_model = onnx_model
        #: "onnx" (ONNX Runtime computes probabilities) or "torch".
        self.backend = "torch" if onnx_model is None else "onnx"
        #: The explanation reference (:mod:`fracturescan.explain.reference`), if the checkpoint has one.
        self.reference = None

    @classmethod
    def from_checkpoint(cls, path: Path | str, device: str = "auto", backend: str = "auto") -> "Predictor":
        """Load a checkpoint directory (or a run directory holding ``best/``).

        ``backend``: ``auto`` uses ONNX Runtime on the CPU when the checkpoint holds a verified
        ``model.onnx`` and onnxruntime is installed, else torch; ``torch`` forces torch; ``onnx``
        forces ONNX Runtime (see :func:`fracturescan.export.select_onnx_model`).
        """
        from .export import select_onnx_model

        dev = resolve_device(device)
        directory = resolve_checkpoint_dir(Path(path))
        model, metadata = load_checkpoint(directory, map_location=dev)
        predictor = cls(model, metadata, dev, select_onnx_model(directory, backend, dev))
        from .explain.reference import load_reference

        predictor.reference = load_reference(directory)
        return predictor

    @property
    def threshold(self) -> float:
        """Decision threshold stored in the checkpoint (chosen on the hold-out)."""
        return float(self.metadata.threshold)

    @property
    def image_size(self) -> int:
        """Square input size the model was trained at."""
        return int(self.metadata.input_size)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """A float [0,1] image from :func:`read_image` → the uint8 model input."""
        return resize_square(image, self.image_size)

    def probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities for preprocessed uint8 (N, size, size) images."""
        if self.onnx_model is not None:
            return self.onnx_model.probabilities(pixels, tuple(self.metadata.mean), tuple(self.metadata.std),
                                                 batch_size=batch_size)
        return predict_pixels(
            self.model, pixels, mean=tuple(self.metadata.mean), std=tuple(self.metadata.std),
            device=self.device, batch_size=batch_size,
        )

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
            p = float(np.mean(probs)) if probs else None
            studies.append(StudyPrediction(study_id, len(probs), p, None if p is None else p >= self.threshold))
        return studies
