"""``fracturescan ensemble``: what the checkpoint records, what it computes, what it refuses."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fracturescan.cli.main import main
from fracturescan.ensemble import build_ensemble, load_ensemble, members_digest, members_of
from fracturescan.errors import CheckpointError
from fracturescan.export import check_inputs
from fracturescan.models.builder import load_checkpoint
from fracturescan.models.checkpoint import read_metadata, update_metadata
from fracturescan.models.metadata import CheckpointMetadata
from fracturescan.models.preprocessing import Preprocessing

from .conftest import random_checkpoint


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def member_probabilities(runs, x: torch.Tensor, temperatures=(1.0, 1.0)) -> np.ndarray:
    """Each run loaded on its own; sigmoid(logit / T) in float64; averaged."""
    probs = []
    for run, t in zip(runs, temperatures):
        model, _ = load_checkpoint(Path(run) / "best")
        with torch.no_grad():
            z = model(x).double().numpy()
        probs.append(1.0 / (1.0 + np.exp(-z / t)))
    return np.mean(probs, axis=0)


def inputs(meta) -> torch.Tensor:
    return check_inputs(Preprocessing.from_metadata(meta), batch=4)


def test_records_members_and_their_hashes(member_runs, ensemble_dir: Path) -> None:
    meta = read_metadata(ensemble_dir)
    members = members_of(meta)
    assert [m.name for m in members] == ["0-a", "1-b"]
    for member, run in zip(members, member_runs):
        assert member.sha256 == sha256(run / "best" / "model.safetensors")
        assert sha256(ensemble_dir / member.path / "model.safetensors") == member.sha256
    assert meta.arch == "ensemble" and meta.synthetic and meta.input_size == 64
    assert meta.threshold == pytest.approx(0.5)  # mean of 0.4 and 0.6
    assert "not tuned for the ensemble" in meta.threshold_method
    # TTA replays only what every member was trained with: the smaller rotation.
    assert meta.training_config["augment"]["rotation"] == 4.0
    card = (ensemble_dir / "MODEL_CARD.md").read_text()
    assert "ensemble of 2 models" in card and "0-a" in card and "SYNTHETIC" in card


def test_probability_is_the_mean_of_the_members(member_runs, ensemble_dir: Path) -> None:
    meta = read_metadata(ensemble_dir)
    x = inputs(meta)
    with torch.no_grad():
        got = torch.sigmoid(load_ensemble(ensemble_dir)(x)).double().numpy()
    np.testing.assert_allclose(got, member_probabilities(member_runs, x), atol=1e-6)


def test_calibrated_members_are_averaged_calibrated(member_runs, tmp_path: Path) -> None:
    """A member carrying a temperature contributes sigmoid(logit / T)."""
    a = shutil.copytree(member_runs[0], tmp_path / "a")
    from fracturescan.evaluation.temperature import Calibration

    fitted = Calibration(temperature=2.5, fitted_on="a test", n_images=10, n_studies=5, n_abnormal_images=4,
                         nll_before=0.7, nll_after=0.6)
    update_metadata(a / "best", calibration=fitted.to_dict())
    ens = build_ensemble([a, member_runs[1]], tmp_path / "ens")
    assert [m.temperature for m in members_of(read_metadata(ens))] == [2.5, 1.0]
    x = inputs(read_metadata(ens))
    with torch.no_grad():
        got = torch.sigmoid(load_ensemble(ens)(x)).double().numpy()
    np.testing.assert_allclose(got, member_probabilities([a, member_runs[1]], x, (2.5, 1.0)), atol=1e-6)


@pytest.mark.parametrize("field, value, words", [
    ("input_size", 32, "input size differs (64 vs 32)"),
    ("mean", [0.5, 0.5, 0.5], "normalisation mean differs"),
    ("std", [0.5, 0.5, 0.5], "normalisation std differs"),
    ("label_names", ["negative", "positive"], "label names differ"),
    ("body_parts", ["XR_ELBOW"], "body parts differ"),
])
def test_incompatible_members_are_refused_in_one_line(member_runs, tmp_path: Path, capsys, field, value, words) -> None:
    other = shutil.copytree(member_runs[1], tmp_path / "other")
    update_metadata(other / "best", **{field: value})
    out = tmp_path / "ens"
    code = main(["ensemble", str(member_runs[0]), str(other), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and words.split(" differ")[0] in err and "0-a and 1-other" in err
    assert not out.exists() and not list(tmp_path.glob(".ens*"))


def test_other_bad_member_lists_are_refused(member_runs, ensemble_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="at least two"):
        build_ensemble([member_runs[0]], tmp_path / "x")
    with pytest.raises(CheckpointError, match="same weights"):
        build_ensemble([member_runs[0], member_runs[0] / "best"], tmp_path / "x")
    with pytest.raises(CheckpointError, match="itself an ensemble"):
        build_ensemble([member_runs[0], ensemble_dir], tmp_path / "x")
    with pytest.raises(CheckpointError, match="would overwrite a member"):
        build_ensemble(list(member_runs), member_runs[0])
    with pytest.raises(CheckpointError, match="not a fracturescan checkpoint"):
        build_ensemble([member_runs[0], tmp_path], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_modified_ensemble_is_refused_on_load(member_runs, ensemble_dir: Path, tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        return shutil.copytree(ensemble_dir, tmp_path / name)

    # A corrupted member file: its own SHA-256 check fails.
    broken = fresh("corrupt")
    weights = broken / "members" / "0-a" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_ensemble(broken)
    # A member swapped for another valid checkpoint (with its own consistent metadata).
    swapped = fresh("swapped")
    shutil.rmtree(swapped / "members" / "0-a")
    random_checkpoint(swapped / "members" / "0-a", 7)
    with pytest.raises(CheckpointError, match="not the checkpoint the ensemble was built from"):
        load_ensemble(swapped)
    # The member list edited by hand (a temperature, or a path out of the folder).
    for name, edit in (("temperature", lambda m: m.__setitem__("temperature", 3.0)),
                       ("escape", lambda m: m.__setitem__("path", "../../a/best"))):
        edited = fresh(name)
        meta = json.loads((edited / "metadata.json").read_text())
        edit(meta["ensemble_members"][0])
        (edited / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="modified after it was built"):
            load_ensemble(edited)
    # ... even when whoever edited it also recomputed the ensemble's digest.
    escaped = fresh("escape-digest")
    meta = json.loads((escaped / "metadata.json").read_text())
    meta["ensemble_members"][0]["path"] = "../../a/best"
    meta["sha256"] = members_digest(members_of(CheckpointMetadata.from_dict(meta)))
    (escaped / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="points outside"):
        load_ensemble(escaped)
    missing = fresh("missing")
    shutil.rmtree(missing / "members" / "1-b")
    with pytest.raises(CheckpointError, match="1-b is missing"):
        load_ensemble(missing)


def test_single_network_uses_of_an_ensemble_name_its_members(ensemble_dir: Path, tmp_path: Path, capsys) -> None:
    """Initialising training from an ensemble, or building one typical-normal reference for it,
    needs one network: a one-line error points at the members."""
    from fracturescan.models.weights import apply_weights

    with pytest.raises(CheckpointError, match="is an ensemble of 2 models, not one network: use one of its members"):
        load_checkpoint(ensemble_dir)
    code = main(["explain", str(ensemble_dir), "--build-reference", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "use one of its members" in err
    from fracturescan.models import build_model

    with pytest.raises(CheckpointError, match="use one of its members"):
        apply_weights(build_model("resnet18", weights="none"), str(ensemble_dir))
