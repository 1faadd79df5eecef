"""Small checkpoints for the ensemble and TTA tests: untrained, so they cost seconds, not minutes."""

from __future__ import annotations

from pathlib import Path

import pytest


def random_checkpoint(directory: Path, seed: int, *, arch: str = "resnet18", size: int = 64,
                      threshold: float = 0.5, rotation: float = 5.0, **fields) -> Path:
    """A random-init checkpoint (different ``seed``, different weights) marked synthetic."""
    import torch

    from fracturescan.models import build_model
    from fracturescan.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = build_model(arch, weights="none")
    meta = {"input_size": size, "synthetic": True, "threshold": threshold, "threshold_method": "test value",
            "body_parts": ["XR_WRIST"], "training_config": {"augment": {"hflip": 0.5, "rotation": rotation}}}
    return save_checkpoint(directory, model, {**meta, **fields})


@pytest.fixture(scope="session")
def member_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two run directories (``a/best``, ``b/best``) with different weights and thresholds."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("members")
    random_checkpoint(root / "a" / "best", 1, threshold=0.4, rotation=10.0)
    random_checkpoint(root / "b" / "best", 2, threshold=0.6, rotation=4.0)
    return root / "a", root / "b"


@pytest.fixture(scope="session")
def ensemble_dir(member_runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ensemble of :func:`member_runs` (built once; tests that modify it work on a copy)."""
    from fracturescan.ensemble import build_ensemble

    return build_ensemble(member_runs, tmp_path_factory.mktemp("ensemble") / "ens")
