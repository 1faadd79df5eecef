"""Tests for self-describing checkpoint directories."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from datetime import datetime
from pathlib import Path

import pytest
import safetensors.torch
import torch

import fracturescan
from fracturescan.errors import CheckpointError
from fracturescan.notices import INTENDED_USE, SYNTHETIC_MODEL
from fracturescan.models import (
    CheckpointMetadata,
    build_model,
    load_checkpoint,
    read_metadata,
    resolve_checkpoint_dir,
    save_checkpoint,
    update_metadata,
)

torch.set_num_threads(1)
ARCH = "mobilenet_v3_small"  # small and fast; densenet121 is covered once below


def _model(arch: str = ARCH, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, hidden=16, dropout=0.25)


def _meta(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "threshold": 0.37,
        "threshold_method": "youden on patient hold-out",
        "metrics": {"auroc": 0.91, "kappa": 0.62},
        "training_config": {"epochs": 3, "lr": 1e-4},
        "data_fingerprint": "abc123",
        "body_parts": ["XR_WRIST"],
    }
    return {**base, **overrides}


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = _model()
    return save_checkpoint(tmp_path / "ckpt", model, _meta()), model


@pytest.mark.parametrize("arch", [ARCH, "densenet121"])
def test_round_trip_gives_identical_model(tmp_path: Path, arch: str) -> None:
    model = _model(arch).eval()
    # Perturb BN running stats so buffers are checked too, not just parameters.
    for buf_name, buf in model.named_buffers():
        if buf_name.endswith("running_mean"):
            buf.normal_()
    path = save_checkpoint(tmp_path / "ckpt", model, _meta())
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    original = model.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert (meta.arch, meta.hidden, meta.dropout, meta.channels) == (arch, 16, 0.25, 3)


def test_metadata_contents(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    assert sorted(p.name for p in path.iterdir()) == ["MODEL_CARD.md", "metadata.json", "model.safetensors"]
    raw = json.loads((path / "metadata.json").read_text())
    assert raw["sha256"] == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert raw["label_names"] == ["normal", "abnormal"]
    assert raw["threshold"] == 0.37 and raw["metrics"]["kappa"] == 0.62
    assert raw["input_size"] == 224 and raw["mean"] == [0.485, 0.456, 0.406]
    assert raw["package_version"] == fracturescan.__version__
    assert raw["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", raw["git_commit"])
    assert datetime.fromisoformat(raw["created_at"]).tzinfo is not None
    assert raw["synthetic"] is False and raw["format_version"] == 1


def test_metadata_dict_round_trip_keeps_unknown_keys() -> None:
    meta = CheckpointMetadata.from_dict({**_meta(), "arch": "resnet18", "future_field": [1, 2]})
    assert meta.extra == {"future_field": [1, 2]}
    again = CheckpointMetadata.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert again == meta
    assert again.to_dict()["future_field"] == [1, 2]


def test_newer_format_version_is_refused() -> None:
    with pytest.raises(CheckpointError, match="upgrade"):
        CheckpointMetadata.from_dict({"format_version": 99})


def test_flipped_byte_is_detected(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or was modified"):
        load_checkpoint(path)


class _Booby:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fix_hash", [False, True])
def test_planted_pickle_is_rejected_without_running(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path, fix_hash: bool
) -> None:
    path, _ = saved
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Booby(control)))
    assert control.exists()  # the payload is live under plain unpickling
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Booby(marker)})
    (path / "model.safetensors").write_bytes(payload)
    if fix_hash:  # an attacker who also edits the metadata must still be stopped by the format
        raw = json.loads((path / "metadata.json").read_text())
        raw["sha256"] = hashlib.sha256(payload).hexdigest()
        (path / "metadata.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="safetensors" if fix_hash else "SHA-256"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_or_bad_metadata(tmp_path: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a fracturescan checkpoint"):
        load_checkpoint(empty)
    path, _ = saved
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(path)


def test_run_directory_with_best(tmp_path: Path) -> None:
    run = tmp_path / "run"
    best = save_checkpoint(run / "best", _model(), _meta())
    assert resolve_checkpoint_dir(run) == best
    assert resolve_checkpoint_dir(best) == best
    assert load_checkpoint(run)[1].threshold == 0.37


def test_atomic_save_leaves_no_temp_dirs_and_survives_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ckpt"
    save_checkpoint(target, _model(seed=1), _meta())
    save_checkpoint(target, _model(seed=2), _meta(threshold=0.6))  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, _model(seed=3), _meta(threshold=0.9))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert read_metadata(target).threshold == 0.6


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="refusing"):
        save_checkpoint(foreign, _model(), _meta())
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_update_metadata(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    sha = read_metadata(path).sha256
    update_metadata(path, threshold=0.42, metrics={"kappa": 0.7})
    meta = read_metadata(path)
    assert (meta.threshold, meta.metrics, meta.sha256) == (0.42, {"kappa": 0.7}, sha)
    assert "0.4200" in (path / "MODEL_CARD.md").read_text()
    with pytest.raises(CheckpointError, match="describe the stored weights"):
        update_metadata(path, arch="resnet18")
    with pytest.raises(TypeError):
        update_metadata(path, no_such_field=1)
    assert sorted(p.name for p in path.iterdir()) == ["MODEL_CARD.md", "metadata.json", "model.safetensors"]
    load_checkpoint(path)  # still verifies


def test_nested_numpy_metrics_are_stored_and_tabulated(saved: tuple[Path, torch.nn.Module]) -> None:
    import numpy as np

    path, _ = saved
    update_metadata(path, metrics={"holdout_image": {"auc": np.float32(0.875), "n": np.int64(12)}})
    assert read_metadata(path).metrics == {"holdout_image": {"auc": 0.875, "n": 12}}
    assert "| holdout_image.auc | 0.8750 |" in (path / "MODEL_CARD.md").read_text()


def test_model_card_flags_synthetic_data(tmp_path: Path) -> None:
    real = save_checkpoint(tmp_path / "real", _model(), _meta())
    fake = save_checkpoint(tmp_path / "fake", _model(), _meta(synthetic=True))
    real_card = (real / "MODEL_CARD.md").read_text()
    fake_card = (fake / "MODEL_CARD.md").read_text()
    assert real_card.startswith("# Model card: real")
    assert INTENDED_USE in real_card and "| kappa | 0.6200 |" in real_card
    assert "SYNTHETIC" not in real_card
    assert SYNTHETIC_MODEL in fake_card
