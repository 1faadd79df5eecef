"""Does the CUDA-graph training step compute what the eager step computes? (GPU only)

Two copies of one small model train side by side on the same batches: one with the eager
:class:`fracturescan.training.step.TrainStep`, one with ``cuda_graph=True``. The batches include
one of a different size (the graph path runs it eagerly into its gradient buffers) and a
ReduceLROnPlateau cut of the learning rate mid-way (the graph reads the rate from a tensor).
fp32, dropout 0 and deterministic cuDNN, so the two runs should agree to rounding. Prints one
row per step and exits 1 if the losses or final weights differ by more than the tolerance.

    PYTHONPATH=src python benchmarks/cuda_graph_parity.py
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from fracturescan.models.network import FractureNet
from fracturescan.training.step import TrainStep, keep_tensor_lr, make_optimizer, tensor_lrs


def main() -> int:
    """Run both paths and compare; 0 when they agree."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--rtol", type=float, default=1e-3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("error: needs a CUDA device (the graph path cannot run on a CPU)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.manual_seed(0)
    eager_model = FractureNet(args.arch, hidden=32, dropout=0.0).to(device).train()
    graph_model = copy.deepcopy(eager_model)
    weights = (0.4, 0.6)
    eager_opt = make_optimizer(eager_model, 1e-3, 0.0, cuda_graph=False)
    graph_opt = make_optimizer(graph_model, 1e-3, 0.0, cuda_graph=True)
    lrs = tensor_lrs(graph_opt, device)
    eager = TrainStep(eager_model, eager_opt, weights, device, amp=False)
    graph = TrainStep(graph_model, graph_opt, weights, device, amp=False, cuda_graph=True)
    scheds = [torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.1, patience=0) for o in (eager_opt, graph_opt)]
    gen = torch.Generator(device="cpu").manual_seed(1)
    worst = 0.0
    print(f"{'step':>4} {'batch':>5} {'eager loss':>12} {'graph loss':>12} {'rel diff':>10}  lr")
    for i in range(args.steps):
        n = args.batch if i != args.steps - 4 else args.batch // 2 + 1  # one odd-size batch
        x = torch.randn(n, 3, args.size, args.size, generator=gen).to(device)
        y = (torch.rand(n, generator=gen) < 0.5).long().to(device)
        a, b = float(eager(x, y)), float(graph(x, y))
        rel = abs(a - b) / max(abs(a), 1e-8)
        worst = max(worst, rel)
        if i == args.steps // 2:  # a plateau: both schedulers cut the rate
            for s in scheds:
                s.step(1.0)
                s.step(1.0)
            keep_tensor_lr(graph_opt, lrs)
        print(f"{i:>4} {n:>5} {a:>12.6f} {b:>12.6f} {rel:>10.2e}  {float(graph_opt.param_groups[0]['lr']):.0e}")
    torch.cuda.synchronize()
    param_diff = max(float((pa - pb).abs().max() / (pa.abs().max() + 1e-8))
                     for pa, pb in zip(eager_model.parameters(), graph_model.parameters()))
    ok = worst <= args.rtol and param_diff <= args.rtol * 10
    print(f"worst loss rel diff {worst:.2e}, worst weight rel diff {param_diff:.2e}: {'AGREE' if ok else 'DIFFER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
