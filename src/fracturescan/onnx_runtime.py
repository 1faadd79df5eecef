"""ONNX Runtime inference over an exported ``model.onnx`` (the fast CPU backend).

:class:`OnnxModel` refuses a file whose SHA-256 differs from the one the checkpoint recorded,
exactly as checkpoints refuse tampered safetensors. Writing the export is :mod:`fracturescan.export`.
``onnxruntime`` belongs to the optional extra ``onnx`` and is imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, MissingExtraError
from .fileio import sha256_file
from .models.preprocessing import Preprocessing

ONNX_FILE = "model.onnx"
#: Names of the graph's input and output.
INPUT_NAME = "input"
OUTPUT_NAME = "logit"


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
        if expected_sha256 is not None and sha256_file(self.path) != expected_sha256:
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

    def probabilities(self, pixels: np.ndarray, preprocessing: Preprocessing, batch_size: int = 32) -> np.ndarray:
        """P(abnormal) for uint8 ``(N, H, W)`` resized images, normalised by the checkpoint's
        ``preprocessing`` contract exactly as the torch backend does."""
        out = np.empty(len(pixels), dtype=np.float64)
        for start in range(0, len(pixels), batch_size):
            chunk = torch.from_numpy(np.array(pixels[start : start + batch_size], dtype=np.uint8))
            x = preprocessing.normalise(chunk).numpy()
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
