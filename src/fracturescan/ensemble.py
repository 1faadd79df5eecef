"""Ensembles of trained runs, stored as one checkpoint directory (``fracturescan ensemble``).

Layout::

    <dir>/metadata.json          an ordinary checkpoint's metadata (input size, normalisation,
                                 labels, threshold, ...) with arch "ensemble" and the member list
    <dir>/MODEL_CARD.md          the card, listing the members
    <dir>/members/<k>-<name>/    a verbatim copy of each member's checkpoint (weights, metadata,
                                 explanation reference, card); no ONNX file, the ensemble
                                 exports its own single graph

``metadata.json`` records, per member, its folder, its weights' SHA-256 and its calibration
temperature; its own ``sha256`` is the digest of that list, so it changes whenever any member
does and serves as the ensemble's version wherever a single model's weight hash is shown. On
load every member's weights are checked against its own metadata (as for any checkpoint) and
its hash against the ensemble's record, so a member swapped for another valid checkpoint is
refused too.

The ensemble's probability is the mean of the members' (calibrated, when the members carry a
temperature) probabilities: :class:`~fracturescan.models.ensemble.EnsembleNet`. Members must
share input size, channels, normalisation, label names and body parts; anything else is refused
with one line naming the difference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .errors import CheckpointError
from .models.checkpoint import (
    CARD_FILE,
    METADATA_FILE,
    MODEL_FILE,
    _git_commit,
    read_metadata,
    resolve_checkpoint_dir,
    staged_directory,
    verify_file,
    write_metadata_files,
)
from .models.ensemble import EnsembleNet
from .models.metadata import CheckpointMetadata

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

log = logging.getLogger(__name__)

ENSEMBLE_ARCH = EnsembleNet.arch
MEMBERS_DIR = "members"
#: Files copied from a member's checkpoint (the weights must be there; the rest when present).
_MEMBER_FILES = (MODEL_FILE, METADATA_FILE, CARD_FILE, "explain_reference.safetensors")
#: Metadata fields every member must share, with how the error names them.
_SHARED = (("input_size", "input size"), ("channels", "channels"), ("mean", "normalisation mean"),
           ("std", "normalisation std"), ("label_names", "label names"), ("body_parts", "body parts"))


@dataclass(frozen=True)
class Member:
    """One member as ``metadata.json`` records it."""

    name: str
    path: str  # relative to the ensemble directory, e.g. "members/0-wrist"
    sha256: str  # of the member's model.safetensors
    arch: str
    temperature: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "arch": self.arch,
                "temperature": self.temperature}


def member_temperature(meta: CheckpointMetadata) -> float:
    """The member's calibration temperature (``calibration.temperature`` in its metadata), 1.0
    when it has none (an uncalibrated member's probabilities are averaged as they are)."""
    calibration = meta.calibration
    value = calibration.get("temperature") if isinstance(calibration, dict) else None
    try:
        temperature = float(value) if value is not None else 1.0
    except (TypeError, ValueError):
        temperature = float("nan")
    if not np.isfinite(temperature) or temperature <= 0:
        raise CheckpointError(f"calibration temperature {value!r} is not a positive number; the checkpoint is corrupt")
    return temperature


def is_ensemble(meta: CheckpointMetadata) -> bool:
    """True when the metadata describes an ensemble checkpoint."""
    return meta.arch == ENSEMBLE_ARCH or bool(meta.ensemble_members)


def members_of(meta: CheckpointMetadata) -> list[Member]:
    """The member records of an ensemble's metadata.

    Raises:
        CheckpointError: the list is missing or malformed.
    """
    try:
        members = [Member(str(m["name"]), str(m["path"]), str(m["sha256"]), str(m["arch"]),
                          float(m.get("temperature", 1.0))) for m in meta.ensemble_members]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"the ensemble_members list in {METADATA_FILE} is malformed ({exc})") from exc
    if len(members) < 2:
        raise CheckpointError(f"the ensemble's {METADATA_FILE} lists {len(members)} member(s); it needs at least two")
    return members


def members_digest(members: Sequence[Member]) -> str:
    """SHA-256 identifying the ensemble: over each member's folder, weight hash and temperature."""
    text = json.dumps([[m.path, m.sha256, repr(float(m.temperature))] for m in members], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_compatible(named: Sequence[tuple[str, CheckpointMetadata]]) -> None:
    """Raise :class:`CheckpointError` (one line) unless all checkpoints take the same input and
    predict the same labels for the same body parts.

    A member that is itself an ensemble, or the same weights given twice, are refused too.
    """
    first_name, first = named[0]
    for name, meta in named:
        if is_ensemble(meta):
            raise CheckpointError(f"{name} is itself an ensemble: list its members instead")
    for name, meta in named[1:]:
        for field, label in _SHARED:
            mine, theirs = getattr(first, field), getattr(meta, field)
            if tuple(np.atleast_1d(mine).tolist()) != tuple(np.atleast_1d(theirs).tolist()):
                raise CheckpointError(
                    f"cannot ensemble {first_name} and {name}: {label} differs ({_show(mine)} vs {_show(theirs)}); "
                    "members must share input size, channels, normalisation, labels and body parts")
    seen: dict[str, str] = {}
    for name, meta in named:
        if meta.sha256 in seen:
            raise CheckpointError(f"{seen[meta.sha256]} and {name} hold the same weights: an ensemble needs different models")
        seen[meta.sha256] = name


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, (tuple, list)) else str(value)


def _member_name(directory: Path) -> str:
    """A run's name: ``wrist`` for the checkpoint ``runs/wrist/best`` (or ``runs/wrist``)."""
    directory = directory.resolve()
    return (directory.parent.name if directory.name == "best" else directory.name) or "member"


def _shared_config(metas: Sequence[CheckpointMetadata], names: Sequence[str]) -> dict[str, Any]:
    """What evaluate and TTA read from ``training_config``: the data set (when the members share
    it) and the augmentation every member was trained with (the smallest rotation)."""
    configs = [m.training_config or {} for m in metas]
    config: dict[str, Any] = {"ensemble_of": list(names)}
    for key in ("data", "body_part", "cache_dir"):
        values = {json.dumps(c.get(key), sort_keys=True) for c in configs}
        if len(values) == 1 and configs[0].get(key) is not None:
            config[key] = configs[0][key]
    rotations = [float(((c.get("augment") or {}).get("rotation")) or 0.0) for c in configs]
    config["augment"] = {"rotation": min(rotations)}
    return config


def build_ensemble(runs: Sequence[Path | str], out: Path | str, *, threshold: float | None = None) -> Path:
    """Write an ensemble checkpoint of ``runs`` (run or checkpoint directories) to ``out``.

    ``threshold``: the decision threshold; default the mean of the members' thresholds (each
    chosen on its own training hold-out; recorded as such, since it was not tuned for the
    ensemble). The write is atomic: an interrupted build leaves no half-made ensemble.

    Raises:
        CheckpointError: fewer than two runs, a member missing/corrupt, incompatible members,
            or ``out`` is an existing non-checkpoint folder.
    """
    if len(runs) < 2:
        raise CheckpointError(f"an ensemble needs at least two runs, got {len(runs)}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise CheckpointError(f"threshold {threshold} must be between 0 and 1")
    sources = [resolve_checkpoint_dir(r) for r in runs]
    names = [f"{k}-{_member_name(directory)}" for k, directory in enumerate(sources)]
    metas = [read_metadata(directory) for directory in sources]
    check_compatible(list(zip(names, metas)))
    target = Path(out)
    if any(target.resolve() in (d.resolve(), *d.resolve().parents) for d in sources):
        raise CheckpointError(f"--out {target} would overwrite a member: choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(target) as staging:
        members = [_copy_member(directory, staging, name, meta)
                   for directory, name, meta in zip(sources, names, metas)]
        write_metadata_files(staging, _ensemble_metadata(metas, members, names, threshold), target.name)
    log.info("ensemble of %d members written to %s", len(members), target)
    return target


def _copy_member(source: Path, staging: Path, name: str, meta: CheckpointMetadata) -> Member:
    """Copy one verified member checkpoint into ``staging/members/name``."""
    verify_file(source / MODEL_FILE, meta.sha256, "SHA-256", "Re-copy or re-train that member.")
    rel = f"{MEMBERS_DIR}/{name}"
    folder = staging / rel
    folder.mkdir(parents=True)
    for file in _MEMBER_FILES:
        if (source / file).is_file():
            shutil.copy2(source / file, folder / file)
    verify_file(folder / MODEL_FILE, meta.sha256, "SHA-256", "The copy failed: check the disk.")
    return Member(name, rel, meta.sha256, meta.arch, member_temperature(meta))


def _ensemble_metadata(metas: Sequence[CheckpointMetadata], members: Sequence[Member], names: Sequence[str],
                       threshold: float | None) -> CheckpointMetadata:
    from datetime import datetime, timezone

    from . import __version__

    first = metas[0]
    fingerprints = {m.data_fingerprint for m in metas}
    if threshold is None:
        threshold = float(np.mean([m.threshold for m in metas]))
        method = "mean of the members' thresholds (each chosen on its own training hold-out; not tuned for the ensemble)"
    else:
        method = "set when the ensemble was built"
    return CheckpointMetadata(
        arch=ENSEMBLE_ARCH, input_size=first.input_size, channels=first.channels, mean=first.mean, std=first.std,
        label_names=first.label_names, threshold=float(threshold), threshold_method=method,
        training_config=_shared_config(metas, names), metrics={},
        data_fingerprint=first.data_fingerprint if len(fingerprints) == 1 else None,
        synthetic=any(m.synthetic for m in metas), body_parts=first.body_parts,
        package_version=__version__, git_commit=_git_commit(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sha256=members_digest(members), ensemble_members=tuple(m.to_dict() for m in members),
    )


def member_checkpoints(directory: Path | str, meta: CheckpointMetadata | None = None) -> list[tuple[Member, Path, CheckpointMetadata]]:
    """Each member's record, folder and metadata, checked against the ensemble's record.

    The weights themselves are verified when loaded (:func:`ensemble_model`).

    Raises:
        CheckpointError: a member folder missing or outside the ensemble, a member whose hash or
            temperature differs from the record, incompatible members, or an edited member list.
    """
    directory = resolve_checkpoint_dir(directory)
    meta = meta or read_metadata(directory)
    members = members_of(meta)
    if members_digest(members) != meta.sha256:
        raise CheckpointError(f"the member list in {directory / METADATA_FILE} does not match its sha256: "
                              "the ensemble was modified after it was built; rebuild it with `fracturescan ensemble`")
    root = directory.resolve()
    found = []
    for member in members:
        folder = (directory / member.path).resolve()
        if root not in folder.parents:
            raise CheckpointError(f"ensemble member path {member.path!r} points outside {directory}; the ensemble is corrupt")
        if not (folder / METADATA_FILE).is_file():
            raise CheckpointError(f"ensemble member {member.name} is missing ({folder}); re-copy or rebuild the ensemble")
        member_meta = read_metadata(folder)
        if member_meta.sha256 != member.sha256 or member_temperature(member_meta) != member.temperature:
            raise CheckpointError(f"ensemble member {member.name} is not the checkpoint the ensemble was built from "
                                  "(its hash or calibration differs); rebuild the ensemble")
        found.append((member, folder, member_meta))
    check_compatible([(member.name, m) for member, _, m in found])
    for field, label in _SHARED:  # the ensemble's own preprocessing must be its members'
        if tuple(np.atleast_1d(getattr(meta, field)).tolist()) != tuple(np.atleast_1d(getattr(found[0][2], field)).tolist()):
            raise CheckpointError(f"the ensemble's {label} differs from its members'; rebuild the ensemble")
    return found


def ensemble_model(members: Sequence["Checkpoint"]) -> EnsembleNet:
    """An :class:`EnsembleNet` of the member checkpoints (each one's weights verified against its
    SHA-256 as it loads), on the CPU. :meth:`Checkpoint.load_model` calls this for an ensemble."""
    return EnsembleNet([m.load_model("cpu") for m in members], [member_temperature(m.metadata) for m in members])


def load_ensemble(directory: Path | str, *, map_location: str | torch.device = "cpu") -> EnsembleNet:
    """The verified :class:`EnsembleNet` of an ensemble checkpoint directory, in eval mode."""
    from .checkpoint import Checkpoint

    ckpt = Checkpoint.open(directory)
    if not ckpt.is_ensemble:
        raise CheckpointError(f"{ckpt.directory} is a single model, not an ensemble")
    return ckpt.load_model(map_location).eval()
