"""Multi-process (DistributedDataParallel) helpers.

Launch with ``torchrun --nproc-per-node N -m fracturescan.train …`` or ``fracturescan train
--nproc N``; a plain ``fracturescan train`` runs as a single process. Every rank shuffles the
training set with the same per-epoch seed and takes a disjoint slice, so each image is seen exactly
once per epoch across ranks (uneven slices are handled with DDP's join). Rank 0 alone writes logs,
history, TensorBoard events and checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes files)."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group described by torchrun's environment (no-op when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    if not ctx.is_main:
        # Keep the console readable: only rank 0 reports progress.
        logging.getLogger("fracturescan").setLevel(logging.WARNING)
    return ctx


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.enabled:
        dist.barrier()


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` training images for ``epoch``: identical on every rank and
    independent of how many epochs ran before (so ``--resume`` reproduces it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def shard(order: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's disjoint slice of ``order`` (the slices partition it)."""
    return order[ctx.rank :: ctx.world_size]


def batches(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split into batches of ``batch_size``; a trailing single image joins the previous batch,
    because BatchNorm cannot train on one image and dropping it would skip data."""
    parts = list(torch.split(indices, batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        last = parts.pop()
        parts[-1] = torch.cat([parts[-1], last])
    return parts


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum a few scalars across ranks."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
