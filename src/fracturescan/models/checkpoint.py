"""Self-describing checkpoints: one directory, safetensors weights, JSON metadata, model card.

Layout::

    <dir>/model.safetensors   the FractureNet state dict (safetensors only: never pickle)
    <dir>/metadata.json       everything needed to rebuild the model and its preprocessing,
                              plus provenance and the SHA-256 of model.safetensors
    <dir>/MODEL_CARD.md       human-readable summary: intended use, data, metrics, limitations
                              (written by :mod:`fracturescan.models.model_card`)

Writes are atomic at the directory level (built next to the target, then renamed into place)
so an interrupted save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch

from fracturescan.errors import CheckpointError
from fracturescan.fileio import atomic_write_text, sha256_file
from fracturescan.models.metadata import FORMAT_VERSION, CheckpointMetadata
from fracturescan.models.model_card import render_model_card
from fracturescan.models.network import FractureNet
from fracturescan.models.preprocessing import resolve_preprocessing

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
#: Fields that describe the stored tensors; changing them in place would make the file lie.
_FROZEN_FIELDS = frozenset({"arch", "hidden", "dropout", "channels", "sha256", "format_version", "ensemble_members"})


def _git_commit() -> str | None:
    """Best-effort commit of the source tree this package runs from; None if unknown."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None




def resolve_checkpoint_dir(path: Path | str, *, repair: bool = True) -> Path:
    """Return ``path`` if it is a checkpoint, ``path/best`` if that is one (a run directory).

    ``repair`` puts back a checkpoint an interrupted save left aside (a rename). Servers discover
    models with ``repair=False``: looking must never change the folders it looks at.

    Raises:
        CheckpointError: neither holds ``metadata.json``.
    """
    path = Path(path)
    for candidate in (path, path / "best"):
        if repair:
            _recover_interrupted_swap(candidate)
        if (candidate / METADATA_FILE).is_file():
            return candidate
    raise CheckpointError(
        f"{path} is not a fracturescan checkpoint: no {METADATA_FILE} in it or in {path / 'best'}. "
        "Pass a checkpoint directory or a training run directory."
    )


def _recover_interrupted_swap(target: Path) -> None:
    """Put back a checkpoint that :func:`_swap_into_place` moved aside when the process died
    before the new one was renamed in (``target`` missing, ``.<name>.old-*`` present)."""
    if target.exists() or not target.parent.is_dir():
        return
    moved = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in reversed(moved):  # the newest complete one
        if (old / METADATA_FILE).is_file():
            os.replace(old, target)
            logger.warning("restored %s from %s after an interrupted save", target, old.name)
            return


def read_metadata(directory: Path | str) -> CheckpointMetadata:
    """Read and parse ``metadata.json`` of a checkpoint (or run) directory."""
    directory = resolve_checkpoint_dir(directory)
    path = directory / METADATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    return CheckpointMetadata.from_dict(data)


def _complete_metadata(model: FractureNet, metadata: CheckpointMetadata | dict[str, Any]) -> CheckpointMetadata:
    from fracturescan import __version__

    if isinstance(metadata, dict):
        # Preprocessing the caller did not state is the architecture's own (one contract).
        contract = resolve_preprocessing(model.arch, input_size=metadata.get("input_size"),
                                         mean=metadata.get("mean"), std=metadata.get("std"),
                                         channels=model.in_channels)
        metadata = CheckpointMetadata.from_dict({**metadata, **contract.to_metadata()})
    # The model, not the caller, is the authority on what the tensors are.
    return dataclasses.replace(
        metadata,
        arch=model.arch,
        hidden=model.hidden,
        dropout=float(model.dropout),
        channels=model.in_channels,
        package_version=__version__,
        git_commit=_git_commit() or metadata.git_commit,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        format_version=FORMAT_VERSION,
    )


def _json_default(value: Any) -> Any:
    # numpy scalars/arrays and paths show up in metrics and configs; store them as plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _render_texts(meta: CheckpointMetadata, name: str) -> tuple[CheckpointMetadata, dict[str, str]]:
    """Return (metadata as it will read back, {file name: text}) for metadata.json and the card."""
    text = json.dumps(meta.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n"
    # Re-parse so numpy scalars etc. appear in the card exactly as they will be read back.
    meta = CheckpointMetadata.from_dict(json.loads(text))
    return meta, {METADATA_FILE: text, CARD_FILE: render_model_card(meta, name=name)}


def _swap_into_place(staging: Path, target: Path) -> None:
    # os.replace cannot overwrite a non-empty directory, so the old one is moved aside first and
    # deleted only once the new one is in place.
    if not target.exists():
        os.replace(staging, target)
        return
    if not target.is_dir():
        raise CheckpointError(f"refusing to overwrite {target}: it is a file, not a checkpoint directory")
    if any(target.iterdir()) and not (target / METADATA_FILE).is_file():
        raise CheckpointError(f"refusing to overwrite {target}: it is not empty and not a checkpoint")
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A new sibling folder of ``target`` to build a checkpoint in: renamed into place when the
    block ends normally, deleted when it raises, so no reader ever sees a half-built checkpoint."""
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        _swap_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_metadata_files(directory: Path, meta: CheckpointMetadata, name: str) -> CheckpointMetadata:
    """Write ``metadata.json`` and the model card into ``directory``; return the metadata as it
    reads back."""
    meta, texts = _render_texts(meta, name)
    for file, text in texts.items():
        (directory / file).write_text(text, encoding="utf-8")
    return meta


def save_checkpoint(
    directory: Path | str, model: FractureNet, metadata: CheckpointMetadata | dict[str, Any]
) -> Path:
    """Write ``model`` and ``metadata`` as a checkpoint directory, atomically; return its path.

    Model-derived fields (arch, hidden, dropout, channels), the package version, git commit,
    creation time and SHA-256 are filled in here. An existing checkpoint at ``directory`` is
    replaced; any other non-empty directory is refused.
    """
    from safetensors.torch import save_file

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unwrap DistributedDataParallel (.module) and torch.compile (._orig_mod) wrappers.
    for attr in ("module", "_orig_mod"):
        model = getattr(model, attr, model)
    if not isinstance(model, FractureNet):
        raise TypeError(f"save_checkpoint needs a FractureNet, got {type(model).__name__}")
    meta = _complete_metadata(model, metadata)
    with staged_directory(target) as staging:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / MODEL_FILE), metadata={"format": "pt"})
        write_metadata_files(staging, dataclasses.replace(meta, sha256=sha256_file(staging / MODEL_FILE)), target.name)
    logger.info("checkpoint saved to %s", target)
    return target


def verify_file(path: Path, expected_sha256: str, field_name: str, remedy: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` exists and hashes to ``expected_sha256``
    (the value recorded as ``field_name`` in metadata.json); ``remedy`` ends the message."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing although {METADATA_FILE} records it; {remedy}")
    if sha256_file(path) != expected_sha256:
        raise CheckpointError(
            f"{path} does not match the {field_name} recorded in {METADATA_FILE}: the file is corrupt "
            f"or was modified after it was written. {remedy}")


def read_state_dict(directory: Path | str, meta: CheckpointMetadata | None = None
                    ) -> tuple[dict[str, torch.Tensor], CheckpointMetadata]:
    """Read a checkpoint's verified state dict (on CPU) and its metadata. Given ``meta`` (already
    parsed from this resolved directory), the metadata is not read again.

    Raises:
        CheckpointError: no checkpoint there, SHA-256 mismatch, or not a safetensors file.
    """
    from safetensors.torch import load_file

    if meta is None:
        directory = resolve_checkpoint_dir(directory)
        meta = read_metadata(directory)
    directory = Path(directory)
    if meta.ensemble_members:
        raise CheckpointError(
            f"{directory} is an ensemble of {len(meta.ensemble_members)} models, not one network: "
            f"use one of its members (in {directory / 'members'}) here")
    weights = directory / MODEL_FILE
    verify_file(weights, meta.sha256, "SHA-256", "Re-copy or re-train the checkpoint.")
    try:
        # safetensors parses a JSON header and raw tensors only; it never unpickles.
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # SafetensorError and friends
        raise CheckpointError(
            f"{weights} is not a valid safetensors file ({exc}); fracturescan refuses other "
            "formats (such as pickles) for safety"
        ) from exc
    return state, meta


def update_metadata(directory: Path | str, **fields: Any) -> CheckpointMetadata:
    """Change metadata fields (e.g. ``threshold``, ``metrics``) in place and refresh the card.

    Each file is replaced atomically. Fields describing the stored weights cannot be changed.

    Raises:
        TypeError: an unknown field name.
        CheckpointError: an attempt to change a field that describes the weights.
    """
    directory = resolve_checkpoint_dir(directory)
    meta = read_metadata(directory)
    names = {f.name for f in dataclasses.fields(CheckpointMetadata)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise TypeError(f"unknown checkpoint metadata fields: {unknown}")
    frozen = sorted(set(fields) & _FROZEN_FIELDS)
    if frozen:
        raise CheckpointError(f"cannot change {frozen}: they describe the stored weights; save a new checkpoint")
    meta, texts = _render_texts(dataclasses.replace(meta, **fields), directory.name)
    for name, text in texts.items():
        atomic_write_text(directory / name, text)  # readers see the old file or the new one
    return meta
