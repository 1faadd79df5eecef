"""DistributedDataParallel with 2 CPU processes on gloo."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fracturescan.training.distributed import DistContext, batches, epoch_order, shard


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3), (1, 2), (64, 4)])
def test_shards_partition_every_epoch(n: int, world: int) -> None:
    for epoch in (1, 2, 3):
        order = epoch_order(n, seed=5, epoch=epoch)
        parts = [shard(order, DistContext(rank, world)) for rank in range(world)]
        seen = torch.cat(parts).sort().values
        assert torch.equal(seen, torch.arange(n))  # each image exactly once across ranks
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert not torch.equal(epoch_order(50, 5, 1), epoch_order(50, 5, 2))
    assert torch.equal(epoch_order(50, 5, 2), epoch_order(50, 5, 2))


def test_batches_never_leave_a_single_image() -> None:
    for n in range(1, 40):
        parts = batches(torch.arange(n), 8)
        assert torch.equal(torch.cat(parts), torch.arange(n))
        assert all(len(p) >= 2 for p in parts) or n == 1


@pytest.mark.slow
def test_two_gloo_processes_train_and_checkpoint_loads(tmp_path: Path) -> None:
    from fracturescan.data.synth import generate_mura_phantoms
    from fracturescan.models import load_checkpoint

    data = generate_mura_phantoms(tmp_path / "data", studies=30, size=48, seed=5).root
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fracturescan.cli.main", "train", "--nproc", "2", "--data", str(data),
           "--out", str(run), "--arch", "resnet18", "--weights", "none", "--image-size", "32",
           "--batch-size", "8", "--epochs", "2", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with (run / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [r["epoch"] for r in history] == ["1", "2"]  # written once, by rank 0
    import json

    n_train = json.loads((run / "split.json").read_text())["train_images"]
    assert all(int(r["train_images"]) == n_train for r in history)  # whole set once per epoch
    model, meta = load_checkpoint(run / "best")  # loads in a single process
    assert meta.arch == "resnet18"
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2,)
