"""The type of a checkpoint's ``metadata.json``: what the weights are, how inputs are prepared,
how decisions are made, and where the checkpoint came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fracturescan.data.records import LABEL_NAMES
from fracturescan.errors import CheckpointError
from fracturescan.models.registry import IMAGENET_MEAN, IMAGENET_STD

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointMetadata:
    """Everything ``metadata.json`` records. Unknown keys from newer versions land in ``extra``
    and are written back unchanged, so an older fracturescan never silently drops them."""

    arch: str = "densenet121"
    hidden: int = 256
    dropout: float = 0.5
    input_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    label_names: tuple[str, ...] = LABEL_NAMES
    threshold: float = 0.5
    threshold_method: str = "default 0.5 (not tuned)"
    training_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    synthetic: bool = False
    body_parts: tuple[str, ...] = ()
    package_version: str = ""
    git_commit: str | None = None
    created_at: str = ""
    sha256: str = ""
    #: SHA-256 of ``model.onnx`` written by ``fracturescan export --onnx``; "" when not exported.
    onnx_sha256: str = ""
    #: SHA-256 and layer of ``explain_reference.safetensors`` (the mean activation of normal
    #: training images that heatmaps are measured against); "" when there is none.
    reference_sha256: str = ""
    reference_layer: str = ""
    #: An ensemble's members (:mod:`fracturescan.ensemble`), one dict each: folder, weights
    #: SHA-256, architecture, calibration temperature. Empty for a single model.
    ensemble_members: tuple[dict[str, Any], ...] = ()
    #: Temperature scaling (:class:`fracturescan.evaluation.temperature.Calibration` as a dict);
    #: {} when uncalibrated, {"unavailable": why} when training could not fit it.
    calibration: dict[str, Any] = field(default_factory=dict)
    #: The two operating points (:class:`fracturescan.evaluation.operating.DecisionPoints`).
    decision_points: dict[str, Any] = field(default_factory=dict)
    #: The input guard's summary (:class:`fracturescan.guard.GuardInfo`); its statistics are in
    #: ``input_guard.safetensors``, whose SHA-256 is ``guard["sha256"]``.
    guard: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``extra`` keys are merged back at the top level."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for name in ("mean", "std", "label_names", "body_parts"):
            out[name] = list(out[name])
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMetadata:
        """Build from a dict (missing keys take defaults; unknown keys are kept in ``extra``).

        Raises:
            CheckpointError: not a dict, or written by a newer, incompatible format version.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint metadata must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version!r} is newer than this fracturescan supports "
                f"({FORMAT_VERSION}); upgrade fracturescan"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        nested = data.get("extra") if isinstance(data.get("extra"), dict) else {}
        extra = {**nested, **{k: v for k, v in data.items() if k not in names | {"extra"}}}
        for name in ("mean", "std", "label_names", "body_parts"):
            if name in known:
                known[name] = tuple(known[name])
        if isinstance(known.get("ensemble_members"), list):  # anything else: refused when loaded
            known["ensemble_members"] = tuple(known["ensemble_members"])
        return cls(**known, extra=extra)
