"""Training survives kill -9 mid-epoch, and the atomic writers never leave a broken file.

The kill test runs the real CLI in a subprocess: it waits for epoch 1 to be saved, lets epoch 2
run for about half its expected duration, SIGKILLs the process, then ``--resume`` completes the
run.  The writer tests simulate a crash at the rename (the one moment a kill cannot be timed).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fracturescan.models import build_model
from fracturescan.models import checkpoint as ckpt_module
from fracturescan.models import load_checkpoint, save_checkpoint
from fracturescan import fileio
from fracturescan.training import callbacks
from fracturescan.training.callbacks import atomic_torch_save, write_history

EPOCHS = 4
STARTUP_TIMEOUT_S = 120.0


def _history_epochs(run: Path) -> list[int]:
    path = run / "history.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _first_epoch_seconds(run: Path) -> float:
    with (run / "history.csv").open() as handle:
        return float(next(csv.DictReader(handle))["seconds"])


def _train_command(data: Path, run: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "fracturescan.cli.main", "train", "--data", str(data),
           "--out", str(run), "--arch", "resnet18", "--weights", "none", "--image-size", "32",
           "--batch-size", "8", "--epochs", str(EPOCHS), "--cache-dir", str(run.parent / "cache"),
           "--device", "cpu"]
    return cmd + (["--resume"] if resume else [])


def _env() -> dict[str, str]:
    # One thread each: the machine has 2 cores shared with other tests.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fracturescan.data.synth import generate_mura_phantoms

    root = tmp_path_factory.mktemp("kill") / "MURA-v1.1"
    generate_mura_phantoms(root, studies=30, size=48, seed=5)
    return root


def test_kill_9_mid_epoch_then_resume(phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(_train_command(phantoms, run, resume=False), stdout=log,
                            stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _history_epochs(run):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.02)
        # history.csv is written after state/last.pt, so epoch 1's state is on disk now; wait
        # about half an epoch so the kill lands inside epoch 2's batches.
        time.sleep(0.5 * _first_epoch_seconds(run))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    killed_at = _history_epochs(run)
    assert killed_at and killed_at[-1] < EPOCHS, "the run finished before it could be killed"
    state = torch.load(run / "state" / "last.pt", map_location="cpu", weights_only=True)
    assert int(state["epoch"]) == killed_at[-1]  # state and history agree after the kill

    resumed = subprocess.run(_train_command(phantoms, run, resume=True), capture_output=True,
                             text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert _history_epochs(run) == list(range(1, EPOCHS + 1))  # no gap, no duplicate
    model, meta = load_checkpoint(run / "best")  # verifies the SHA-256
    assert meta.input_size == 32 and meta.arch == "resnet18"
    assert 1 <= meta.metrics["best_epoch"] <= EPOCHS and meta.metrics["epochs_run"] == EPOCHS
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name
                 or ".old-" in p.name]
    assert leftovers == []


# --------------------------------------------------------------------------- atomic writers


class _Crash(BaseException):
    """Stands in for the process dying: a BaseException so no ``except Exception`` absorbs it."""


def test_atomic_torch_save_keeps_old_file_when_rename_fails(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1, "w": torch.arange(5.0)}, target)
    before = target.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise _Crash

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(_Crash):
        atomic_torch_save({"epoch": 2, "w": torch.zeros(5)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    state = torch.load(target, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(5.0))


def test_atomic_torch_save_keeps_old_file_when_write_dies(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash half-way through torch.save never leaves a partial last.pt (nor its temp file)."""
    target = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, target)
    before = target.read_bytes()
    real_save = torch.save

    def half_save(obj: object, path: object) -> None:
        real_save(obj, path)
        Path(path).write_bytes(Path(path).read_bytes()[:10])  # what a kill mid-write leaves
        raise _Crash

    monkeypatch.setattr(callbacks.torch, "save", half_save)
    with pytest.raises(_Crash):
        atomic_torch_save({"epoch": 2}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    # The next save (what --resume does) replaces the stale temp file.
    atomic_torch_save({"epoch": 3}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_history_rewrite_keeps_old_file_when_rename_fails(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "history.csv"
    write_history(target, [{"epoch": 1, "train_loss": 0.5}])
    before = target.read_text()
    monkeypatch.setattr(fileio.os, "replace", lambda *a: (_ for _ in ()).throw(_Crash()))
    with pytest.raises(_Crash):
        write_history(target, [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4}])
    monkeypatch.undo()
    assert target.read_text() == before


def _tiny(seed: int):
    torch.manual_seed(seed)
    return build_model("resnet18", weights="none", hidden=16)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_save_dying_mid_write_keeps_old_best(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    best = tmp_path / "best"
    old_model = _tiny(0)
    save_checkpoint(best, old_model, {"input_size": 32})
    import safetensors.torch as st_torch

    def dying_save_file(state: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise _Crash

    monkeypatch.setattr(st_torch, "save_file", dying_save_file)
    with pytest.raises(_Crash):
        save_checkpoint(best, _tiny(1), {"input_size": 32})
    monkeypatch.undo()
    loaded, _ = load_checkpoint(best)  # SHA-256 verified
    assert _same_weights(loaded, old_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # staging cleaned up


def test_checkpoint_swap_interrupted_between_renames_keeps_a_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    best = tmp_path / "best"
    save_checkpoint(best, _tiny(0), {"input_size": 32})
    real_replace = os.replace
    calls = {"n": 0}

    def replace_then_die(src: object, dst: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # old best moved aside; the new one is not in place yet
            raise _Crash
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_module.os, "replace", replace_then_die)
    with pytest.raises(_Crash):
        save_checkpoint(best, _tiny(1), {"input_size": 32})
    monkeypatch.undo()
    load_checkpoint(best)  # either the old or the new checkpoint must be there, intact
