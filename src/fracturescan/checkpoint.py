"""One loaded checkpoint: the directory resolved once, its metadata parsed once, and everything
the checkpoint carries reachable from one object.

:class:`Checkpoint` is what the Predictor, explanations, the ONNX export and the service take.
It resolves a run directory to its ``best/`` checkpoint, reads ``metadata.json`` once, and gives
the preprocessing contract, the verified weights (as a network), the verified explanation
reference and the verified ONNX export. Data added to checkpoints later (calibration, operating
points, input-guard statistics, ensemble members) is recorded in the metadata and, when it is
tensors, in a side file whose SHA-256 the metadata holds: :func:`fracturescan.models.checkpoint.verify_file`
is the one check for all of them.

The files themselves (save, read, update, the metadata type) live in :mod:`fracturescan.models`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .models.builder import model_from_state
from .models.checkpoint import (CARD_FILE, METADATA_FILE, MODEL_FILE, read_metadata, read_state_dict,
                                resolve_checkpoint_dir, update_metadata)
from .models.metadata import CheckpointMetadata
from .models.network import FractureNet
from .models.preprocessing import Preprocessing

if TYPE_CHECKING:
    from .decision import DecisionRule
    from .models.ensemble import EnsembleNet
    from .explain.reference import Reference
    from .guard import GuardModel
    from .onnx_runtime import OnnxModel


class Checkpoint:
    """A checkpoint directory and its parsed metadata (see the module docstring).

    Open one with :meth:`open`; it is cheap (one small JSON read). Weights, the reference and
    the ONNX model are read, and verified against their SHA-256, only when asked for.
    """

    def __init__(self, directory: Path, metadata: CheckpointMetadata) -> None:
        self.directory = Path(directory)
        self.metadata = metadata

    @classmethod
    def open(cls, path: "Path | str | Checkpoint", *, repair: bool = True) -> "Checkpoint":
        """Open a checkpoint directory, or the ``best/`` checkpoint of a run directory.
        A :class:`Checkpoint` is returned as it is. ``repair=False`` opens read-only (see
        :func:`~fracturescan.models.checkpoint.resolve_checkpoint_dir`).

        Raises:
            CheckpointError: no checkpoint there, or its metadata is unreadable or too new.
        """
        if isinstance(path, Checkpoint):
            return path
        directory = resolve_checkpoint_dir(path, repair=repair)
        return cls(directory, read_metadata(directory))

    def __eq__(self, other: object) -> bool:
        """Two opened checkpoints are the same when they are the same directory holding the same
        weights (so two discoveries of one run compare equal)."""
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return (self.directory.resolve(), self.metadata.sha256) == (other.directory.resolve(), other.metadata.sha256)

    def __hash__(self) -> int:
        return hash((self.directory.resolve(), self.metadata.sha256))

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, arch={self.metadata.arch!r}, sha256={self.metadata.sha256[:12]!r})"

    @property
    def name(self) -> str:
        """The run's name: the run directory's for ``run/best``, else the checkpoint directory's."""
        return self.directory.parent.name if self.directory.name == "best" else self.directory.name

    @property
    def run_directory(self) -> Path:
        """The training run directory holding this checkpoint (the checkpoint itself if none)."""
        return self.directory.parent if self.directory.name == "best" else self.directory

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        """The input contract the network was trained with (size, normalisation, channels)."""
        return Preprocessing.from_metadata(self.metadata)

    @property
    def threshold(self) -> float:
        """The single decision threshold chosen on the hold-out."""
        return float(self.metadata.threshold)

    def path(self, name: str) -> Path:
        """A file of this checkpoint by name."""
        return self.directory / name

    @property
    def is_ensemble(self) -> bool:
        """True for an ensemble of checkpoints (:mod:`fracturescan.ensemble`)."""
        return bool(self.metadata.ensemble_members) or self.metadata.arch == "ensemble"

    @functools.cached_property
    def members(self) -> "tuple[Checkpoint, ...]":
        """An ensemble's member checkpoints, each checked against the ensemble's record (hash,
        calibration, compatibility); empty for a single model. Their weights are verified when
        loaded.

        Raises:
            CheckpointError: a member missing, replaced, incompatible, or the member list edited.
        """
        if not self.is_ensemble:
            return ()
        from .ensemble import member_checkpoints

        return tuple(Checkpoint(folder, meta) for _, folder, meta in member_checkpoints(self.directory, self.metadata))

    def weight_files(self) -> list[tuple[Path, str]]:
        """(weights file, the SHA-256 its metadata records) for every network this checkpoint
        loads: its own ``model.safetensors``, or each ensemble member's.

        Raises:
            CheckpointError: an ensemble's member list does not check out (see :attr:`members`).
        """
        if self.is_ensemble:
            return [item for member in self.members for item in member.weight_files()]
        return [(self.path(MODEL_FILE), self.metadata.sha256)]

    def load_model(self, device: torch.device | str = "cpu") -> "FractureNet | EnsembleNet":
        """The network with this checkpoint's verified weights, in eval mode on ``device`` (for an
        ensemble, an :class:`~fracturescan.models.ensemble.EnsembleNet` of its members).

        Raises:
            CheckpointError: weights missing, tampered with, or not fitting the described network.
        """
        if self.is_ensemble:
            from .ensemble import ensemble_model

            return ensemble_model(self.members).to(torch.device(device)).eval()
        state, _ = read_state_dict(self.directory, self.metadata)
        return model_from_state(state, self.metadata, source=str(self.directory)).to(torch.device(device))

    @functools.cached_property
    def reference(self) -> "Reference | None":
        """The verified typical-normal explanation reference, or None when there is none.

        Raises:
            CheckpointError: recorded but missing or tampered with.
        """
        from .explain.reference import load_reference

        return load_reference(self.directory, self.metadata)

    @functools.cached_property
    def decision_rule(self) -> "DecisionRule":
        """Calibration, operating points and input-guard summary (:mod:`fracturescan.decision`);
        its ``missing`` names what an older checkpoint lacks."""
        from .decision import DecisionRule

        return DecisionRule.from_metadata(self.metadata)

    @functools.cached_property
    def guard(self) -> "GuardModel | None":
        """The input guard's verified statistics, or None when the checkpoint has none.

        Raises:
            CheckpointError: recorded but missing or tampered with.
        """
        from .guard import load_guard

        info = self.decision_rule.guard
        return None if info is None else load_guard(self.directory, info)

    def onnx_model(self, threads: int | None = None) -> "OnnxModel":
        """The verified ONNX export as an ONNX Runtime model.

        Raises:
            CheckpointError: none recorded, or the file does not match its SHA-256.
            MissingExtraError: onnxruntime is not installed.
        """
        from .errors import CheckpointError
        from .onnx_runtime import ONNX_FILE, OnnxModel

        if not self.metadata.onnx_sha256:
            raise CheckpointError(
                f"{self.path(ONNX_FILE)} has no onnx_sha256 in {METADATA_FILE}, so it cannot be verified: "
                "re-run `fracturescan export MODEL --onnx`")
        return OnnxModel(self.path(ONNX_FILE), expected_sha256=self.metadata.onnx_sha256, threads=threads)

    def model_card(self) -> str:
        """The checkpoint's MODEL_CARD.md text ('' if missing)."""
        card = self.path(CARD_FILE)
        return card.read_text(encoding="utf-8") if card.is_file() else ""

    def update(self, **fields: Any) -> "Checkpoint":
        """Change metadata fields in place (atomically) and return the checkpoint as it now is."""
        return Checkpoint(self.directory, update_metadata(self.directory, **fields))


__all__ = ["Checkpoint", "MODEL_FILE"]
