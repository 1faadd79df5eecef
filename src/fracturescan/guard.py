"""Input guard: is this image like the radiographs the model was trained on?

A classifier answers every input, a holiday photo included. The guard describes the training
images by their globally pooled feature vectors (the trunk's final map, what the head sees) with a
class-conditional Gaussian sharing one covariance (Ledoit-Wolf shrinkage, since the features
outnumber the images), after Lee et al., NeurIPS 2018. An image's score is its smallest squared
Mahalanobis distance to a class mean divided by the median score of the training images (a
layer-free scale; with several layers the largest ratio counts). The threshold is set on the patient-level hold-out (images the model never
trained on) as the split-conformal quantile: with ``n`` hold-out images the
``ceil((n + 1) * keep)``-th smallest score, so a new in-distribution image is kept with probability
at least ``keep`` (default 0.95).

The statistics live beside the weights as ``input_guard.safetensors``; its SHA-256 and summary
are recorded in ``metadata.json`` (``guard``) and checked on load, like the explanation reference.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, DatasetError
from .models.preprocessing import Preprocessing
from .records import known_fields

log = logging.getLogger(__name__)

GUARD_FILE = "input_guard.safetensors"
#: Share of in-distribution images the threshold is set to keep.
DEFAULT_KEEP = 0.95
#: Most training images used to fit the Gaussians (a seeded random subset beyond).
MAX_FIT_IMAGES = 2048
GUARD_MESSAGE = "not like the training data: result unreliable"


@dataclass(frozen=True)
class GuardInfo:
    """The guard's summary in ``metadata.json``.

    Attributes:
        sha256: SHA-256 of :data:`GUARD_FILE`.
        layers: trunk modules whose pooled features are modelled.
        threshold: guard score above which an image is flagged.
        keep: share of in-distribution images the threshold targets.
        kept_on_threshold_data: share of the threshold images actually kept.
        n_fit_images, n_threshold_images: images the Gaussians and the threshold came from.
        fitted_on: where the threshold images came from, in words.
        input_size: model input size the statistics were computed at.
    """

    sha256: str
    layers: tuple[str, ...]
    threshold: float
    keep: float
    kept_on_threshold_data: float
    n_fit_images: int
    n_threshold_images: int
    fitted_on: str
    input_size: int
    fitted_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardInfo:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = known_fields(cls, data)
        known["layers"] = tuple(known.get("layers", ()))
        return cls(**known)


@dataclass(frozen=True)
class GuardModel:
    """Per layer: class means ``(K, C)``, shared precision ``(C, C)`` and the training median score."""

    layers: tuple[str, ...]
    means: dict[str, torch.Tensor]
    precisions: dict[str, torch.Tensor]
    scales: dict[str, float]
    threshold: float = math.inf


def guard_layers(model: nn.Module) -> tuple[str, ...]:
    """The modules whose pooled output the guard models: the trunk's final feature map, which is
    what the classifier head sees (``features`` of a :class:`~fracturescan.models.FractureNet`).

    Measured on a 64-px phantom DenseNet121 (tests/test_guard_phantom.py), this one layer already
    flagged every photo, document, noise, inverted, chest-like and other-anatomy image while
    keeping about 99% of the test split; the stored format allows several layers should a
    backbone need them.
    """
    if not isinstance(getattr(model, "features", None), nn.Module):
        raise CheckpointError(f"the input guard models a single network's features; a {type(model).__name__} has "
                              "none (for an ensemble, calibrate with --no-guard)")
    return ("features",)


@torch.no_grad()
def pooled_features(model: nn.Module, pixels: np.ndarray | torch.Tensor, layers: tuple[str, ...], *,
                    preprocessing: Preprocessing, batch_size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(logits ``(N,)``, {layer: globally average-pooled features ``(N, C)``}) for uint8 ``(N, H, W)``
    images resized to the checkpoint's ``preprocessing`` contract."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise CheckpointError(f"the input guard names layers this model lacks: {missing}")
    device = next(model.parameters()).device
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    # Pool inside the hook: in-place modules (ReLU) would overwrite the map before we read it.
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: store[name].append(out.detach().float().mean(dim=(2, 3)).cpu()))
        for name in layers]
    logits = []
    model.eval()
    try:
        for start in range(0, len(pixels), batch_size):
            chunk = torch.from_numpy(np.array(pixels[start:start + batch_size], dtype=np.uint8)).to(device)
            logits.append(model(preprocessing.normalise(chunk)).float().cpu().reshape(-1))
    finally:
        for handle in handles:
            handle.remove()
    feats = {name: torch.cat(parts).numpy().astype(np.float64) for name, parts in store.items()}
    return torch.cat(logits).numpy().astype(np.float64) if logits else np.empty(0), feats


def _layer_scores(feats: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Smallest squared Mahalanobis distance to any class mean, per row."""
    best = np.full(len(feats), np.inf)
    for mu in means:
        diff = feats - mu
        best = np.minimum(best, np.einsum("ij,jk,ik->i", diff, precision, diff))
    return best


def guard_scores(guard: GuardModel, feats: dict[str, np.ndarray]) -> np.ndarray:
    """Each image's guard score: the largest, over layers, of its distance / the training median."""
    per_layer = [_layer_scores(feats[name], guard.means[name].double().numpy(),
                               guard.precisions[name].double().numpy()) / guard.scales[name]
                 for name in guard.layers]
    return np.max(np.stack(per_layer), axis=0)


def fit_gaussians(feats: dict[str, np.ndarray], labels: np.ndarray) -> GuardModel:
    """Class means, a shared Ledoit-Wolf covariance's inverse and the median score, per layer.

    Raises:
        DatasetError: fewer than two images.
    """
    from sklearn.covariance import ledoit_wolf

    labels = np.asarray(labels).astype(np.int64)
    if len(labels) < 2:
        raise DatasetError(f"the input guard needs at least two training images, got {len(labels)}")
    means, precisions, scales = {}, {}, {}
    classes = [c for c in (0, 1) if (labels == c).any()]
    for name, x in feats.items():
        mu = np.stack([x[labels == c].mean(axis=0) for c in classes])
        centred = x - mu[np.searchsorted(classes, labels)]
        cov, _ = ledoit_wolf(centred, assume_centered=True)
        precision = np.linalg.pinv(cov, hermitian=True)
        means[name] = torch.from_numpy(mu).float()
        precisions[name] = torch.from_numpy(precision).float()
        scales[name] = float(np.median(_layer_scores(x, mu, precision))) or 1.0
    return GuardModel(tuple(feats), means, precisions, scales)


def conformal_threshold(scores: np.ndarray, keep: float = DEFAULT_KEEP) -> float:
    """The ``ceil((n + 1) * keep)``-th smallest score: a new exchangeable score falls at or below it
    with probability at least ``keep``.

    Raises:
        DatasetError: too few scores for that guarantee (fewer than ``keep / (1 - keep)``).
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(scores) + 1) * keep)
    if rank > len(scores):
        need = math.ceil(keep / (1 - keep))
        raise DatasetError(f"too few images to set the input guard's threshold: {len(scores)} given, at "
                           f"least {need} needed to keep {keep:.0%} of in-distribution images")
    return float(scores[rank - 1])


def save_guard(directory: Path, guard: GuardModel, info: GuardInfo) -> GuardInfo:
    """Write :data:`GUARD_FILE` atomically into a checkpoint directory; return ``info`` with its SHA-256.

    The caller records the returned info in ``metadata.json``.
    """
    from safetensors.torch import save_file

    from .fileio import atomic_path, sha256_file

    tensors = {}
    for i, name in enumerate(guard.layers):
        tensors[f"{i}.means"] = guard.means[name].contiguous()
        tensors[f"{i}.precision"] = guard.precisions[name].contiguous()
    header = {"layers": ",".join(guard.layers), "scales": ",".join(repr(guard.scales[n]) for n in guard.layers),
              "threshold": repr(float(guard.threshold))}
    target = Path(directory) / GUARD_FILE
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return GuardInfo(**{**info.to_dict(), "layers": guard.layers, "sha256": sha256_file(target)})


def load_guard(directory: Path, info: GuardInfo) -> GuardModel:
    """Read and verify :data:`GUARD_FILE` against ``info.sha256``.

    Raises:
        CheckpointError: missing, modified, or not a guard file.
    """
    from safetensors import safe_open

    from .models.checkpoint import verify_file

    path = Path(directory) / GUARD_FILE
    verify_file(path, info.sha256, "guard sha256", "Re-copy the checkpoint or rebuild the guard "
                "(`fracturescan calibrate MODEL DATA`).")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            layers = tuple(header["layers"].split(","))
            scales = [float(s) for s in header["scales"].split(",")]
            means = {n: handle.get_tensor(f"{i}.means") for i, n in enumerate(layers)}
            precisions = {n: handle.get_tensor(f"{i}.precision") for i, n in enumerate(layers)}
            threshold = float(header["threshold"])
    except Exception as exc:  # safetensors errors, missing keys
        raise CheckpointError(f"{path} is not a valid input-guard file ({exc})") from exc
    return GuardModel(layers, means, precisions, dict(zip(layers, scales)), threshold)


def build_guard(model: nn.Module, fit_pixels: np.ndarray, fit_labels: np.ndarray, threshold_pixels: np.ndarray, *,
                preprocessing: Preprocessing, keep: float = DEFAULT_KEEP, fitted_on: str,
                seed: int = 0) -> tuple[GuardModel, GuardInfo]:
    """Fit the Gaussians on ``fit_pixels`` (training images) and the threshold on
    ``threshold_pixels`` (hold-out images the model never trained on).

    Raises:
        DatasetError: too few images for either step.
    """
    fit_pixels = np.asarray(fit_pixels)
    fit_labels = np.asarray(fit_labels)
    if len(fit_pixels) > MAX_FIT_IMAGES:
        keep_idx = np.sort(np.random.default_rng(seed).choice(len(fit_pixels), MAX_FIT_IMAGES, replace=False))
        fit_pixels, fit_labels = fit_pixels[keep_idx], fit_labels[keep_idx]
    layers = guard_layers(model)
    _, fit_feats = pooled_features(model, fit_pixels, layers, preprocessing=preprocessing)
    fitted = fit_gaussians(fit_feats, fit_labels)
    _, held = pooled_features(model, np.asarray(threshold_pixels), layers, preprocessing=preprocessing)
    scores = guard_scores(fitted, held)
    threshold = conformal_threshold(scores, keep)
    guard = GuardModel(fitted.layers, fitted.means, fitted.precisions, fitted.scales, threshold)
    info = GuardInfo("", layers, threshold, float(keep), float(np.mean(scores <= threshold)), len(fit_pixels),
                     len(scores), fitted_on, int(preprocessing.input_size), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    log.info("input guard: %d layers, threshold %.3g keeps %.1f%% of %d %s images", len(layers), threshold,
             100 * info.kept_on_threshold_data, len(scores), fitted_on)
    return guard, info


# --- DICOM header check (before the model runs) ---------------------------------------------

#: Modalities of projection radiographs (computed and digital radiography).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
#: BodyPartExamined values each MURA body part accepts (the part and its neighbours in one view).
_PART_TERMS: dict[str, frozenset[str]] = {
    "XR_WRIST": frozenset({"WRIST", "HAND", "FOREARM"}),
    "XR_HAND": frozenset({"HAND", "WRIST", "FINGER", "THUMB"}),
    "XR_FINGER": frozenset({"FINGER", "THUMB", "HAND"}),
    "XR_FOREARM": frozenset({"FOREARM", "WRIST", "ELBOW"}),
    "XR_ELBOW": frozenset({"ELBOW", "FOREARM", "HUMERUS"}),
    "XR_HUMERUS": frozenset({"HUMERUS", "ELBOW", "SHOULDER"}),
    "XR_SHOULDER": frozenset({"SHOULDER", "HUMERUS", "CLAVICLE", "SCAPULA"}),
}
#: Region-wide terms that never contradict an upper-limb model.
_UPPER_LIMB_TERMS = frozenset({"EXTREMITY", "UPPEREXTREMITY", "UPREXTREMITY", "UPPERLIMB", "ARM", "LIMB"})
#: Body parts the check recognises; a value outside this list (site-specific codes) is not judged.
_KNOWN_TERMS = frozenset().union(*_PART_TERMS.values()) | frozenset({
    "CHEST", "SKULL", "HEAD", "BRAIN", "FACE", "JAW", "NECK", "ABDOMEN", "PELVIS", "HIP", "KNEE", "ANKLE",
    "FOOT", "TOE", "HEEL", "LEG", "LOWERLIMB", "LOWEREXTREMITY", "FEMUR", "TIBIA", "FIBULA", "SPINE",
    "CSPINE", "TSPINE", "LSPINE", "SSPINE", "SACRUM", "COCCYX", "BREAST", "RIB", "RIBS", "STERNUM", "HEART",
    "WHOLEBODY", "SHOULDER", "CLAVICLE", "SCAPULA"})


def header_flags(info: dict[str, Any] | None, body_parts: tuple[str, ...] | list[str]) -> list[str]:
    """Reasons a DICOM header says this is not a radiograph of the model's body parts.

    ``info`` is :func:`fracturescan.data.dicom_dataset.dicom_metadata_safe`'s dict (None: not DICOM).
    A missing or unrecognised value is not a contradiction and gives no flag.
    """
    if not info:
        return []
    flags = []
    modality = (info.get("modality") or "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        flags.append(f"DICOM Modality is {modality}, not a radiograph (CR or DX)")
    part = "".join(ch for ch in str(info.get("body_part_examined") or "").upper() if ch.isalnum())
    parts = [p for p in body_parts if p in _PART_TERMS]
    if part and parts and part in _KNOWN_TERMS and part not in _UPPER_LIMB_TERMS:
        allowed = frozenset().union(*(_PART_TERMS[p] for p in parts))
        if part not in allowed:
            flags.append(f"DICOM BodyPartExamined is {part}, but the model was trained on {', '.join(parts)}")
    return flags


def dicom_header_flags(path: Path | str | bytes, body_parts: tuple[str, ...] | list[str],
                       name: str | None = None) -> list[str]:
    """:func:`header_flags` of a DICOM file (path or bytes); [] for non-DICOM or unreadable headers
    (the pixel reader reports those)."""
    from .data.dicom_dataset import dicom_metadata_safe, load_dataset
    from .data.images import sniff_format
    from .errors import FracturescanError

    try:
        if isinstance(path, bytes):
            head, source = path[:132], path
        else:
            with Path(path).open("rb") as handle:
                head, source = handle.read(132), Path(path)
    except OSError:
        return []
    if sniff_format(head) != "dicom" and not str(name or path).lower().endswith((".dcm", ".dicom")):
        return []
    try:
        info = dicom_metadata_safe(load_dataset(source, name=name, force=True, pixels=False))
    except FracturescanError:
        return []
    return header_flags(info, body_parts)
