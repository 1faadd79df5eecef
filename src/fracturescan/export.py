"""ONNX export of a checkpoint and an ONNX Runtime model for fast CPU inference.

``export_onnx`` writes ``model.onnx`` into the checkpoint directory (dynamic batch axis), checks
it against the torch model on full-size inputs before keeping it, and records its SHA-256 in
``metadata.json`` as ``onnx_sha256``. :class:`OnnxModel` refuses a ``model.onnx`` whose hash
differs from the recorded one, exactly as checkpoints refuse tampered safetensors.

The graph takes the *normalised* float input ``(N, C, H, W)`` and returns one logit per image,
like :class:`~fracturescan.models.FractureNet`; preprocessing stays in Python so the torch and
ONNX Runtime backends share it byte for byte.

``onnx`` (needed by torch's exporter) and ``onnxruntime`` form the optional extra ``onnx``; both
are imported only when used.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from .data.transforms import normalise
from .errors import CheckpointError, MissingExtraError
from .models.checkpoint import file_sha256, load_checkpoint, read_metadata, resolve_checkpoint_dir, update_metadata

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
#: Lowest opset with every op DenseNet/ResNet-style backbones need and broad runtime support.
DEFAULT_OPSET = 17
#: Largest |logit_onnx - logit_torch| accepted right after export.
DEFAULT_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logit"


class OnnxExportError(CheckpointError):
    """The exported ONNX graph does not reproduce the torch model (or could not be written)."""


@dataclass(frozen=True)
class ExportResult:
    """Where ``model.onnx`` went, its SHA-256, and how closely it matched torch."""

    path: Path
    sha256: str
    max_abs_diff: float
    opset: int


def import_onnxruntime() -> ModuleType:
    """Return the ``onnxruntime`` module, or raise :class:`MissingExtraError` naming the extra."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx", "ONNX Runtime inference") from exc
    return onnxruntime


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` can be imported."""
    try:
        import_onnxruntime()
    except MissingExtraError:
        return False
    return True


class OnnxModel:
    """An ONNX Runtime session over a checkpoint's verified ``model.onnx``.

    Calling it with a normalised float32 ``(N, C, H, W)`` array returns ``(N,)`` float32 logits.
    """

    def __init__(self, path: Path | str, *, expected_sha256: str | None = None,
                 threads: int | None = None) -> None:
        """Open ``path``; if ``expected_sha256`` is given, refuse a file that does not match it.

        Args:
            threads: intra-op threads (default: ``torch.get_num_threads()``, so one thread budget
                governs both backends and ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` apply).

        Raises:
            MissingExtraError: onnxruntime is not installed.
            CheckpointError: the file is missing, tampered with, or not a valid ONNX model.
        """
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path} is missing: run `fracturescan export MODEL --onnx` first")
        if expected_sha256 is not None and file_sha256(self.path) != expected_sha256:
            raise CheckpointError(
                f"{self.path} does not match the onnx_sha256 recorded in metadata.json: the file is "
                "corrupt or was modified after export. Re-run `fracturescan export MODEL --onnx`."
            )
        self.threads = int(threads or torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=_session_options(ort, self.threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise CheckpointError(f"{self.path} is not a loadable ONNX model ({exc}); re-export it") from exc

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for a normalised float ``(N, C, H, W)`` batch."""
        feed = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
        return np.asarray(self.session.run([OUTPUT_NAME], feed)[0], dtype=np.float32).reshape(-1)

    def probabilities(self, pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                      channels: int = 3, batch_size: int = 32) -> np.ndarray:
        """P(abnormal) for uint8 ``(N, H, W)`` preprocessed images (same normalisation as torch)."""
        out = np.empty(len(pixels), dtype=np.float64)
        for start in range(0, len(pixels), batch_size):
            chunk = torch.from_numpy(np.array(pixels[start : start + batch_size], dtype=np.uint8))
            x = normalise(chunk, mean, std, channels).numpy()
            logits = self(x).astype(np.float64)
            out[start : start + len(chunk)] = 1.0 / (1.0 + np.exp(-logits))
        return out


def _session_options(ort: ModuleType, threads: int) -> Any:
    opts = ort.SessionOptions()
    # All graph rewrites (conv+BN folding, layout changes) are what make ORT beat eager torch.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    # One graph, one stream of work: a second pool would only compete for the same cores.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def load_onnx_model(directory: Path | str, threads: int | None = None) -> OnnxModel:
    """Open a checkpoint's ``model.onnx`` after checking it against ``onnx_sha256`` in its metadata.

    Raises:
        CheckpointError: no export recorded in the metadata, or the file does not match it.
        MissingExtraError: onnxruntime is not installed.
    """
    directory = resolve_checkpoint_dir(directory)
    meta = read_metadata(directory)
    if not meta.onnx_sha256:
        raise CheckpointError(
            f"{directory / ONNX_FILE} has no onnx_sha256 in metadata.json, so it cannot be verified: "
            "re-run `fracturescan export MODEL --onnx`"
        )
    return OnnxModel(directory / ONNX_FILE, expected_sha256=meta.onnx_sha256, threads=threads)


def check_inputs(size: int, channels: int, mean: tuple[float, ...], std: tuple[float, ...],
                 batch: int = 3, seed: int = 0) -> torch.Tensor:
    """Normalised ``(batch, channels, size, size)`` inputs that look like radiographs.

    A dark background with a bright, blurred, noisy blob stands in for bone: the full uint8 range
    is used, so the comparison exercises the same activations real images do.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(batch):
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
        img = 20 + 200 * blob + rng.normal(0, 12, (size, size))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return normalise(torch.from_numpy(np.stack(images)), mean, std, channels)


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


def export_onnx(directory: Path | str, *, opset: int = DEFAULT_OPSET,
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
    directory = resolve_checkpoint_dir(directory)
    import_onnxruntime()  # fail before the slow export, not after it
    model, meta = load_checkpoint(directory, map_location="cpu")
    mean, std, size, channels = tuple(meta.mean), tuple(meta.std), int(meta.input_size), int(meta.channels)
    inputs = check_inputs(size, channels, mean, std)
    tmp = directory / f".{ONNX_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with torch.no_grad():
            _torch_export(model, inputs[:1], tmp, opset)
            expected = model(inputs).float().numpy()
        actual = OnnxModel(tmp, threads=threads)(inputs.numpy())
        diff = float(np.max(np.abs(actual - expected)))
        if not diff <= tolerance:  # also catches NaN
            raise OnnxExportError(
                f"ONNX Runtime output differs from torch by {diff:.3g} (> {tolerance:g}) on "
                f"{size}px inputs: model.onnx was not written. Try another --opset or report a bug."
            )
        sha = file_sha256(tmp)
        os.replace(tmp, directory / ONNX_FILE)
    except (RuntimeError, torch.onnx.OnnxExporterError) as exc:
        raise OnnxExportError(f"torch could not export {meta.arch} to ONNX opset {opset}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    update_metadata(directory, onnx_sha256=sha)
    log.info("Exported %s (opset %d), max |logit diff| vs torch %.2e", directory / ONNX_FILE, opset, diff)
    return ExportResult(directory / ONNX_FILE, sha, diff, opset)


#: Values of ``Predictor.from_checkpoint(backend=...)``.
BACKENDS = ("auto", "torch", "onnx")


def select_onnx_model(directory: Path | str, backend: str = "auto",
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
    directory = resolve_checkpoint_dir(directory)
    device = torch.device(device)
    if backend == "torch":
        return None
    if backend == "onnx":
        if device.type != "cpu":
            raise ConfigError(f"the ONNX Runtime backend runs on the CPU, not {device}: use --device cpu")
        return load_onnx_model(directory)
    if device.type != "cpu" or not (directory / ONNX_FILE).is_file():
        return None
    if not onnxruntime_available():
        log.info("%s exists but onnxruntime is not installed: using torch (pip install "
                 "'fracturescan[onnx]' for faster CPU inference)", directory / ONNX_FILE)
        return None
    return load_onnx_model(directory)
