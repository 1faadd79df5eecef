"""Predictor: one loaded checkpoint; predict an image, a study, a folder or a whole MURA tree.

Preprocessing is the checkpoint's contract (:attr:`Checkpoint.preprocessing`), applied with the
same reader and resize as the training cache, so every front end sees identical model inputs.
Results come from the checkpoint's decision rule (:func:`fracturescan.decision.decide_study`):
calibrated probabilities, abnormal / doubt / normal, input-guard and DICOM-header flags; a
study's probability is the mean of its unflagged images' (MURA's rule).
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
from .decision import DecisionRule, decide_study
from .devices import resolve_device
from .errors import FracturescanError
from .models.preprocessing import Preprocessing
from .tta import TestTimeAugmentation

if TYPE_CHECKING:
    from .explain.reference import Reference
    from .guard import GuardModel
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
    #: abnormal / doubt / normal (None without operating points or a probability).
    level: str | None = None
    #: Why the image is not trusted (DICOM header, input guard); such images are left out of the study.
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyPrediction:
    """A study's result: mean of its readable, unflagged images' (calibrated) probabilities."""

    study_id: str
    n_images: int
    probability: float | None
    abnormal: bool | None
    level: str | None = None
    notes: tuple[str, ...] = ()


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
        checkpoint.guard  # noqa: B018  (likewise the input guard's statistics)

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
    def rule(self) -> DecisionRule:
        """Calibration, operating points and input-guard summary (:mod:`fracturescan.decision`)."""
        return self.checkpoint.decision_rule

    @property
    def guard(self) -> "GuardModel | None":
        """The input guard's verified statistics (:mod:`fracturescan.guard`), if the checkpoint has them."""
        return self.checkpoint.guard

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

    def logits(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Raw logits for preprocessed uint8 (N, size, size) images (ONNX Runtime or torch). With
        TTA: the raw logit whose calibrated probability is the mean over the views (so the
        decision rule shows exactly that mean)."""
        if self.tta is None:
            return self._logits(pixels, batch_size)
        from .evaluation.temperature import logits_from_probabilities

        mean = self.tta.probabilities(lambda view: self.rule.probabilities(self._logits(view, batch_size)), pixels)
        return self.rule.temperature * logits_from_probabilities(mean)

    def _logits(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        if self.onnx_model is None:
            from .guard import pooled_features

            return pooled_features(self.model, pixels, (), preprocessing=self.preprocessing, batch_size=batch_size)[0]
        out = np.empty(len(pixels), dtype=np.float64)
        for start in range(0, len(pixels), batch_size):
            chunk = torch.from_numpy(np.array(pixels[start:start + batch_size], dtype=np.uint8))
            out[start:start + len(chunk)] = self.onnx_model(self.preprocessing.normalise(chunk).numpy())
        return out

    def probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities for preprocessed uint8 (N, size, size) images (the plain
        sigmoid when the checkpoint has no calibration), averaged over the test-time views when
        the predictor was made with ``tta=True``."""
        return self.rule.probabilities(self.logits(pixels, batch_size))

    def assess(self, pixels: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw logits, input-guard scores or None without a guard) for preprocessed images.

        The guard reads the torch model's pooled features (of the image as given), so with a
        guard and no TTA the logits come from the same torch pass.
        """
        if self.guard is None:
            return self.logits(pixels, batch_size), None
        from .guard import guard_scores, pooled_features

        logits, feats = pooled_features(self.model, pixels, self.guard.layers, preprocessing=self.preprocessing,
                                        batch_size=batch_size)
        if self.tta is not None:
            logits = self.logits(pixels, batch_size)
        return logits, guard_scores(self.guard, feats)

    def predict_image(self, source: Path | str | bytes, name: str | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> float:
        """Probability of abnormality for one image file or its bytes."""
        pixels = self.preprocess(read_image(source, max_pixels=max_pixels, name=name))
        return float(self.probabilities(pixels[None])[0])

    def predict_paths(self, paths: Iterable[Path | str] | CollectedInputs, batch_size: int = 32,
                      progress: bool = True,
                      include_flagged: bool = False) -> tuple[list[ImagePrediction], list[StudyPrediction]]:
        """Predict every image under ``paths`` (or already :func:`collect_inputs`-grouped inputs);
        unreadable files are reported, not fatal.

        DICOM headers are checked before the model runs and every image passes the input guard
        (when the checkpoint has one); flagged images are left out of their study's probability
        unless ``include_flagged``. Decisions come from :func:`fracturescan.decision.decide_study`.
        """
        from .guard import dicom_header_flags

        pairs = list(paths if isinstance(paths, CollectedInputs) else collect_inputs(paths))
        logits: dict[Path, float] = {}
        scores: dict[Path, float] = {}
        failed: dict[Path, str] = {}
        headers = {path: dicom_header_flags(path, self.metadata.body_parts) for _, path in pairs}
        for start in tqdm(range(0, len(pairs), batch_size), desc="predicting", unit="batch",
                          disable=not progress or len(pairs) <= batch_size):
            arrays, readable = [], []
            for _, path in pairs[start : start + batch_size]:
                try:
                    arrays.append(self.preprocess(read_image(path)))
                    readable.append(path)
                except FracturescanError as exc:
                    failed[path] = str(exc)
                    log.info("Skipped %s: %s", path, exc)  # reported in the results, not an alarm
            if arrays:
                z, guard = self.assess(np.stack(arrays))
                logits.update(zip(readable, z.tolist()))
                if guard is not None:
                    scores.update(zip(readable, guard.tolist()))
        grouped: dict[str, list[Path]] = {}
        for study_id, path in pairs:
            grouped.setdefault(study_id, []).append(path)
        images: list[ImagePrediction] = []
        studies: list[StudyPrediction] = []
        for study_id, members in grouped.items():
            result = decide_study(self.rule, [logits.get(p) for p in members], names=[str(p) for p in members],
                                  guard_scores=[scores.get(p) for p in members],
                                  header_flags=[headers[p] for p in members], errors=[failed.get(p) for p in members],
                                  include_flagged=include_flagged)
            images += [ImagePrediction(i.name, study_id, i.probability, i.abnormal, i.error, i.level, i.flags)
                       for i in result.images]
            n_used = sum(1 for i in result.images if i.used)
            studies.append(StudyPrediction(study_id, n_used, result.probability, result.abnormal, result.level,
                                           result.notes))
        order = {str(p): k for k, (_, p) in enumerate(pairs)}
        return sorted(images, key=lambda i: order[i.path]), studies
