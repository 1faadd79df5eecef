"""ONNX export of a checkpoint, and the choice of backend for a Predictor.

``export_onnx`` writes ``model.onnx`` into the checkpoint directory (dynamic batch axis), checks
it against the torch model on full-size inputs before keeping it, and records its SHA-256 in
``metadata.json`` as ``onnx_sha256``. Running it is :mod:`fracturescan.onnx_runtime`, whose
:class:`OnnxModel` refuses a ``model.onnx`` whose hash differs from the recorded one.

The graph takes the *normalised* float input ``(N, C, H, W)`` and returns one logit per image,
like :class:`~fracturescan.models.FractureNet`; preprocessing stays in Python so the torch and
ONNX Runtime backends share it byte for byte. An ensemble checkpoint exports as ONE graph holding
every member and the averaging (:class:`~fracturescan.models.ensemble.EnsembleNet`), checked
against torch like any other.

``onnx`` (needed by torch's exporter) and ``onnxruntime`` form the optional extra ``onnx``; both
are imported only when used.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint
from .errors import CheckpointError, MissingExtraError
from .fileio import atomic_path, sha256_file
from .models.preprocessing import Preprocessing
# The runtime side, re-exported: the export is checked with it, and users import it from here.
from .onnx_runtime import (INPUT_NAME, ONNX_FILE, OUTPUT_NAME, OnnxModel, import_onnxruntime,  # noqa: F401
                           onnxruntime_available)

log = logging.getLogger(__name__)

#: Lowest opset with every op DenseNet/ResNet-style backbones need and broad runtime support.
DEFAULT_OPSET = 17
#: Largest |logit_onnx - logit_torch| accepted right after export.
DEFAULT_TOLERANCE = 1e-4


class OnnxExportError(CheckpointError):
    """The exported ONNX graph does not reproduce the torch model (or could not be written)."""


@dataclass(frozen=True)
class ExportResult:
    """Where ``model.onnx`` went, its SHA-256, and how closely it matched torch."""

    path: Path
    sha256: str
    max_abs_diff: float
    opset: int


def load_onnx_model(checkpoint: "Checkpoint | Path | str", threads: int | None = None) -> OnnxModel:
    """A checkpoint's verified ``model.onnx`` (see :meth:`Checkpoint.onnx_model`)."""
    return Checkpoint.open(checkpoint).onnx_model(threads)


def check_inputs(preprocessing: Preprocessing, batch: int = 3, seed: int = 0) -> torch.Tensor:
    """Normalised ``(batch, channels, size, size)`` inputs that look like radiographs.

    A dark background with a bright, blurred, noisy blob stands in for bone: the full uint8 range
    is used, so the comparison exercises the same activations real images do.
    """
    size = preprocessing.input_size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(batch):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
        img = 20 + 200 * blob + rng.normal(0, 12, (size, size))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return preprocessing.normalise(torch.from_numpy(np.stack(images)))


def _torch_export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    try:
        import onnx  # noqa: F401  (torch's TorchScript exporter needs it to write the file)
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx", "ONNX export") from exc
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs the
        # extra onnxscript package; it still produces a correct, simpler graph for these CNNs.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def export_onnx(checkpoint: "Checkpoint | Path | str", *, opset: int = DEFAULT_OPSET,
                tolerance: float = DEFAULT_TOLERANCE, threads: int | None = None) -> ExportResult:
    """Export a checkpoint's model to ``model.onnx`` beside its weights, verified against torch.

    The graph is traced at batch 1 and checked at batch 3 (so the dynamic batch axis is checked
    too) on inputs of the checkpoint's real size. A file that differs from torch by more than
    ``tolerance`` in any logit is deleted and the export refused.

    Raises:
        CheckpointError: the checkpoint is missing or corrupt.
        OnnxExportError: opset too old, export failed, or outputs differ from torch.
        MissingExtraError: ``onnx`` or ``onnxruntime`` is not installed.
    """
    if opset < DEFAULT_OPSET:
        raise OnnxExportError(f"opset {opset} is too old: use {DEFAULT_OPSET} or newer")
    checkpoint = Checkpoint.open(checkpoint)
    import_onnxruntime()  # fail before the slow export, not after it
    model = checkpoint.load_model("cpu")
    inputs = check_inputs(checkpoint.preprocessing)
    target = checkpoint.path(ONNX_FILE)
    try:
        with atomic_path(target) as tmp:
            with torch.no_grad():
                _torch_export(model, inputs[:1], tmp, opset)
                expected = model(inputs).float().numpy()
            actual = OnnxModel(tmp, threads=threads)(inputs.numpy())
            diff = float(np.max(np.abs(actual - expected)))
            if not diff <= tolerance:  # also catches NaN
                raise OnnxExportError(
                    f"ONNX Runtime output differs from torch by {diff:.3g} (> {tolerance:g}) on "
                    f"{checkpoint.preprocessing.input_size}px inputs: model.onnx was not written. "
                    "Try another --opset or report a bug.")
            sha = sha256_file(tmp)
    except (RuntimeError, torch.onnx.OnnxExporterError) as exc:
        raise OnnxExportError(f"torch could not export {checkpoint.metadata.arch} to ONNX opset {opset}: {exc}") from exc
    checkpoint.update(onnx_sha256=sha)
    log.info("Exported %s (opset %d), max |logit diff| vs torch %.2e", target, opset, diff)
    return ExportResult(target, sha, diff, opset)


#: Values of ``Predictor.from_checkpoint(backend=...)``.
BACKENDS = ("auto", "torch", "onnx")


def select_onnx_model(checkpoint: Checkpoint, backend: str = "auto",
                      device: torch.device | str = "cpu") -> OnnxModel | None:
    """The ONNX Runtime model a Predictor should use, or None for torch.

    ``auto`` picks ONNX Runtime when the device is the CPU, ``model.onnx`` exists and onnxruntime
    is installed (the CPU wheel gains nothing over torch on a GPU); ``torch`` never does; ``onnx``
    always does and fails if it cannot.

    Raises:
        ConfigError: unknown backend, or ``onnx`` on a non-CPU device.
        CheckpointError: ``model.onnx`` is missing (``onnx``) or fails its SHA-256 check.
        MissingExtraError: ``onnx`` was asked for and onnxruntime is not installed.
    """
    from .errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"unknown inference backend {backend!r}: use one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "torch":
        return None
    if backend == "onnx":
        if device.type != "cpu":
            raise ConfigError(f"the ONNX Runtime backend runs on the CPU, not {device}: use --device cpu")
        return checkpoint.onnx_model()
    if device.type != "cpu" or not checkpoint.path(ONNX_FILE).is_file():
        return None
    if not onnxruntime_available():
        log.info("%s exists but onnxruntime is not installed: using torch (pip install "
                 "'fracturescan[onnx]' for faster CPU inference)", checkpoint.path(ONNX_FILE))
        return None
    return checkpoint.onnx_model()
