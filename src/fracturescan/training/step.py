"""One optimisation step (forward → class-weighted BCE → backward → Adam), without host syncs.

The training loop and ``benchmarks/train_throughput.py`` both use :class:`TrainStep`, so the
benchmark times exactly what ``fracturescan train`` runs. The step returns the loss as a device
tensor; the caller decides how often to read it back (every batch on the CPU, where reading is
free; every :data:`GPU_SYNC_EVERY` batches on a GPU, where each read stalls the launch queue).

``cuda_graph=True`` captures the whole step (forward, backward and the optimiser update) in one
CUDA graph after a few eager warm-up steps and then replays it, which removes the per-kernel
launch cost that bounds DenseNet121 at small batches. Requirements, checked up front: a CUDA
device, a single process (no DDP), no ``torch.compile``, and a fixed batch size: a batch of
another size (the last, shorter one of an epoch) runs eagerly into the same gradient buffers.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .losses import weighted_bce

#: On a GPU, read the running loss back (and check it is finite) once per this many batches.
GPU_SYNC_EVERY = 25
#: Eager steps before a CUDA graph is captured (lets cuDNN pick kernels and Adam build its state).
GRAPH_WARMUP_STEPS = 3


def autocast(device: torch.device, enabled: bool, cache: bool = True):
    """bf16 autocast on CUDA (needs no loss scaling); a no-op elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda", cache_enabled=cache)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, cuda_graph: bool) -> torch.optim.Adam:
    """Adam; for graph capture its state lives on the device and the learning rate is a tensor,
    so a scheduler's change reaches the captured update."""
    if not cuda_graph:
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    device = next(model.parameters()).device
    return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device),
                            weight_decay=weight_decay, capturable=True)


def check_cuda_graph(device: torch.device, distributed: bool, compiled: bool) -> None:
    """Refuse combinations the captured step does not support, before any work starts."""
    if device.type != "cuda":
        raise ConfigError(f"--cuda-graph needs a CUDA device; this run uses {device}.")
    if distributed:
        raise ConfigError("--cuda-graph is single-process only; drop --nproc/torchrun or the flag.")
    if compiled:
        raise ConfigError("--cuda-graph and --compile are alternatives; choose one.")


class TrainStep:
    """``step(x, y) -> loss`` (a detached device tensor) for one normalised batch."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, weights: tuple[float, float],
                 device: torch.device, amp: bool, cuda_graph: bool = False) -> None:
        self.model, self.opt, self.weights, self.device, self.amp = model, opt, weights, device, amp
        self.cuda_graph = cuda_graph
        self._eager_steps = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, y, loss

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Once a graph exists its gradient buffers must survive: zero them instead of freeing them.
        self.opt.zero_grad(set_to_none=self._graph is None)
        with autocast(self.device, self.amp, cache=not self.cuda_graph):
            logits = self.model(x)
        loss = weighted_bce(logits, y, self.weights)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graph:
            return self._eager(x, y)
        if self._graph is None and self._eager_steps < GRAPH_WARMUP_STEPS:
            # Warm-up runs on a side stream, as capture requires.
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                loss = self._eager(x, y)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._eager_steps += 1
            return loss
        if self._graph is None:
            self._capture(x, y)
        static_x, static_y, static_loss = self._static
        if x.shape != static_x.shape:
            return self._eager(x, y)  # e.g. the last, shorter batch of an epoch
        static_x.copy_(x)
        static_y.copy_(y)
        self._graph.replay()
        return static_loss.clone()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        static_x, static_y = x.clone(), y.clone()
        self.opt.zero_grad(set_to_none=True)  # gradients get allocated inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            with autocast(self.device, self.amp, cache=False):
                logits = self.model(static_x)
            static_loss = weighted_bce(logits, static_y, self.weights)
            static_loss.backward()
            self.opt.step()
        # Capturing records the step without running it: replay once so this batch trains too.
        graph.replay()
        self._graph, self._static = graph, (static_x, static_y, static_loss.detach())


def tensor_lrs(opt: torch.optim.Optimizer, device: torch.device) -> list[torch.Tensor]:
    """Make each group's learning rate a device tensor (a resumed optimizer may hold floats) and
    return them: the captured graph reads these very tensors."""
    out = []
    for group in opt.param_groups:
        lr = group["lr"]
        if not isinstance(lr, torch.Tensor) or lr.device != device:
            group["lr"] = lr = torch.tensor(float(lr), device=device)
        out.append(lr)
    return out


def keep_tensor_lr(opt: torch.optim.Optimizer, lrs: list[torch.Tensor]) -> None:
    """After a scheduler step, copy any learning rate it stored as a float back into the tensor
    the captured graph reads (torch versions before the in-place update replaced the tensor)."""
    for group, lr in zip(opt.param_groups, lrs):
        if group["lr"] is not lr:
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
