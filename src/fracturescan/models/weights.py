"""Initial weights for a :class:`FractureNet`: ``imagenet``, ``none`` or a local ``PATH``.

ImageNet weights live in the standard torch hub cache (``$TORCH_HOME/hub/checkpoints/<file>``),
where torchvision itself keeps them. When the file is missing and downloads are allowed it is
fetched once from torchvision's URL (or the mirror in ``FRACTURESCAN_IMAGENET_BASE_URL``) with a
progress bar, checked against the SHA-256 prefix in its name and written atomically
(:mod:`fracturescan.models.download`). ``--offline`` / ``FRACTURESCAN_OFFLINE=1`` forbid the
download. Every ``.pth``/``.pt`` file is read with ``torch.load(weights_only=True)`` so that
loading a file can never run code hidden in a pickle.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tv_models
from torch import nn

from fracturescan.errors import CheckpointError, ConfigError, WeightsNotFoundError
from fracturescan.fileio import sha256_file
from fracturescan.models.download import (
    OFFLINE_ENV,
    NetworkUnavailableError,
    download_verified,
    hash_prefix_of,
    offline_requested,
)
from fracturescan.models.checkpoint import read_state_dict
from fracturescan.models.network import FractureNet
from fracturescan.models.registry import check_arch

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

# Old DenseNet files name a layer's sub-modules "norm.1"/"conv.2"; current torchvision calls
# them "norm1"/"conv2". The dot between the word and the digit is all that differs.
_LEGACY_DENSENET_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")
#: A mirror of download.pytorch.org/models (same file names): ``https://mirror.example/models``.
MIRROR_ENV = "FRACTURESCAN_IMAGENET_BASE_URL"


def imagenet_weights_url(arch: str) -> str:
    """URL of torchvision's default ImageNet weights for ``arch`` (on the mirror, if one is set)."""
    check_arch(arch)
    url = str(tv_models.get_model_weights(arch).DEFAULT.url)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        url = f"{mirror.rstrip('/')}/{Path(urlparse(url).path).name}"
    return url


def imagenet_weights_path(arch: str) -> Path:
    """Where the torch hub cache keeps ``arch``'s ImageNet weights (the file may not exist)."""
    filename = Path(urlparse(imagenet_weights_url(arch)).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def remap_legacy_densenet_keys(state: StateDict) -> StateDict:
    """Rename old-style DenseNet keys (``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``).

    Keys already in the current format pass through unchanged, so this is safe to apply always.
    """
    return {_LEGACY_DENSENET_KEY.sub(r"\1\2.", key): value for key, value in state.items()}


def load_imagenet_state_dict(arch: str, *, offline: bool | None = None, progress: bool = True) -> StateDict:
    """Read ``arch``'s torchvision ImageNet state dict, downloading it once if needed.

    Args:
        arch: torchvision architecture name.
        offline: forbid the download; ``None`` reads ``FRACTURESCAN_OFFLINE``.
        progress: show a progress bar while downloading (on a terminal).

    Raises:
        WeightsNotFoundError: the file is not cached and cannot be downloaded (offline or no
            network); the message names the exact file, the full path to put it at, and the
            URL to fetch it from on a connected machine.
        DownloadError: the download broke off or failed the hash check (nothing was kept).
    """
    path = imagenet_weights_path(arch)
    if path.is_file():
        _warn_if_hash_differs(path)
        return read_state_dict_file(path)
    url = imagenet_weights_url(arch)
    if offline if offline is not None else offline_requested():
        raise _not_cached(arch, path, url, f"downloads are off (--offline or {OFFLINE_ENV}=1)")
    logger.info("Downloading ImageNet weights for %s from %s to %s", arch, url, path)
    try:
        download_verified(url, path, progress=progress)
    except NetworkUnavailableError as exc:
        raise _not_cached(arch, path, url, f"the download failed ({exc})") from exc
    return read_state_dict_file(path)


def _not_cached(arch: str, path: Path, url: str, why: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"ImageNet weights for {arch} are not in the local torch hub cache and {why}. "
        f"On a machine with internet access download {url} and place the file {path.name} at "
        f"{path} (or point TORCH_HOME at a folder whose hub/checkpoints/ holds it), or train "
        "from scratch with --weights none."
    )


def _warn_if_hash_differs(path: Path) -> None:
    # A file put in the cache by hand is checked too, but only warned about: the keys and
    # shapes are still checked strictly on load. Our own downloads are verified before they land.
    expected = hash_prefix_of(path.name)
    if expected is not None and not sha256_file(path).startswith(expected):
        logger.warning("%s does not match the hash in its name; it may be truncated or replaced", path)


def read_state_dict_file(path: Path) -> StateDict:
    """Read a state dict from ``.safetensors`` or (pickle-free) ``.pth``/``.pt``/``.bin``.

    Raises:
        CheckpointError: the file is unreadable, holds arbitrary pickled objects, or is no
            mapping of names to tensors.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif suffix in {".pth", ".pt", ".bin", ".ckpt"}:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ConfigError(
                f"cannot read weights from {path}: expected a .safetensors, .pth or .pt file "
                "or a fracturescan checkpoint directory"
            )
    except ConfigError:
        raise
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        raise CheckpointError(
            f"cannot read weights file {path}: {exc.__class__.__name__}: {exc}. It is corrupt, "
            "truncated, or contains objects other than tensors (refused for safety)."
        ) from exc
    return _as_tensor_dict(state, path)


def _as_tensor_dict(state: object, path: Path) -> StateDict:
    # Training frameworks often nest the weights one level down.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path} is not a state dict (a mapping of names to tensors)")
    # Files saved from DataParallel/DDP prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def adapt_input_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB input kernel ``(O, 3, k, k)`` into an ``(O, in_channels, k, k)`` one.

    Each new channel gets the RGB kernels' sum divided by ``in_channels``: an input whose channels
    all hold the same grey image then produces exactly the response of the RGB model to that grey
    image replicated three times.
    """
    summed = weight.sum(dim=1, keepdim=True) / in_channels
    return summed.expand(-1, in_channels, -1, -1).contiguous()


def load_backbone_state_dict(model: FractureNet, state: StateDict, *, source: str) -> None:
    """Load a torchvision-format state dict into ``model.features``; the head is untouched.

    Keys of the original classifier and auxiliary heads are ignored; every other key must match
    (strict), except BatchNorm ``num_batches_tracked`` counters, absent from old files.

    Raises:
        CheckpointError: missing, unexpected or wrongly shaped keys (message names ``source``).
    """
    if model.arch.startswith("densenet"):
        state = remap_legacy_densenet_keys(state)
    dropped = set(model.dropped_backbone_keys)
    kept = {k: v for k, v in state.items() if k.split(".", 1)[0] not in dropped}
    expected = model.features.state_dict()
    for key in expected.keys() - kept.keys():
        if key.endswith("num_batches_tracked"):
            kept[key] = torch.zeros((), dtype=torch.long)
    conv_key = model.first_conv_key
    if conv_key in kept and kept[conv_key].shape[1] == 3 and model.in_channels != 3:
        kept[conv_key] = adapt_input_conv_weight(kept[conv_key], model.in_channels)
    _check_keys(expected.keys(), kept.keys(), source, model.arch)
    _load_strict(model.features, kept, source)


def _check_keys(expected: object, found: object, source: str, arch: str) -> None:
    missing = sorted(set(expected) - set(found))  # type: ignore[call-overload]
    unexpected = sorted(set(found) - set(expected))  # type: ignore[call-overload]
    if missing or unexpected:
        raise CheckpointError(
            f"weights from {source} do not fit a {arch} backbone: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). "
            "Check that the file was made for this architecture (--arch)."
        )


def _load_strict(module: nn.Module, state: StateDict, source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"weights from {source} do not fit the model: {first}") from exc


def _is_full_model_state(model: FractureNet, state: StateDict) -> bool:
    return set(state) == set(model.state_dict())


def _load_checkpoint_dir(model: FractureNet, path: Path) -> None:
    state, meta = read_state_dict(path)
    mine = (model.arch, model.hidden, model.in_channels)
    theirs = (meta.arch, meta.hidden, meta.channels)
    if mine != theirs:
        raise CheckpointError(
            f"checkpoint {path} holds arch={meta.arch}, hidden={meta.hidden}, "
            f"channels={meta.channels} but the model asked for arch={model.arch}, "
            f"hidden={model.hidden}, channels={model.in_channels}; use matching options"
        )
    _load_strict(model, state, str(path))


def apply_weights(model: FractureNet, weights: str | Path) -> None:
    """Initialise ``model`` in place according to a ``--weights`` value.

    ``"none"``: keep the random init. ``"imagenet"``: torchvision ImageNet weights from the torch
    hub cache (downloaded once unless offline) into the backbone. A directory: a fracturescan checkpoint (backbone and head). A
    file: a full FractureNet state dict (if its keys say so) or a torchvision backbone state dict.

    Raises:
        WeightsNotFoundError: ImageNet weights neither cached nor downloadable, or the path
            does not exist.
        DownloadError: the ImageNet download broke off or failed its hash check.
        CheckpointError: the weights cannot be read or do not fit the model.
        ConfigError: unsupported file type.
    """
    spec = str(weights)
    if spec.lower() == "none":
        logger.info("%s: random initialisation", model.arch)
        return
    if spec.lower() == "imagenet":
        load_backbone_state_dict(model, load_imagenet_state_dict(model.arch), source="imagenet")
        logger.info("%s: ImageNet weights loaded into the backbone", model.arch)
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        _load_checkpoint_dir(model, path)
    elif path.is_file():
        state = read_state_dict_file(path)
        if _is_full_model_state(model, state):
            _load_strict(model, state, str(path))
        else:
            load_backbone_state_dict(model, state, source=str(path))
    else:
        raise WeightsNotFoundError(
            f"--weights {spec!r}: no such file or directory; use 'imagenet', 'none', a "
            ".safetensors/.pth file or a fracturescan checkpoint directory"
        )
    logger.info("%s: weights loaded from %s", model.arch, path)
