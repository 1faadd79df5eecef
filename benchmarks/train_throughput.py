"""Training throughput: the naive input path (the baseline) against the fast one, end to end.

* **naive** — the original recipe: a torch ``DataLoader`` whose workers open each PNG with PIL
  and run torchvision transforms (resize, flip, rotation, brightness/contrast), fp32, batch 32.
* **fast** — what ``fracturescan train`` does: the preprocessed uint8 cache held as one tensor
  on the device, batched augmentation there (:func:`fracturescan.data.transforms.augment_batch`),
  bf16 autocast and channels_last on CUDA (fp32, same code path, on CPU), the loop's own
  :class:`fracturescan.training.step.TrainStep` (class-weighted BCE, Adam, loss read back every
  ``GPU_SYNC_EVERY`` steps on a GPU); optionally under ``torch.compile`` (``--compile``) or with
  the whole step captured in a CUDA graph (``--cuda-graph``).

Same model (random-init, same seed), same phantom PNGs, same augmentation ranges, both sampling
with replacement. Images/s count every timed step from input to optimiser step; each step reads
the loss back to the host as the training loop does. Warm-up steps (worker start-up, cuDNN
autotuning, compilation, graph capture) are not timed; the one-off cache build is reported
separately. The naive path reads its loss back every step, as the original recipe's loop did.

    # CPU smoke run (what CI does; < 1 min on 2 cores)
    python benchmarks/train_throughput.py --device cpu --image-size 64 --images 64 --steps 2 --batch-size 16
    # GPU run (see RESULTS.md)
    python benchmarks/train_throughput.py --device cuda --image-size 224 --images 2048 --steps 30 \\
        --batch-size 32 --fast-batch-sizes 32,128,256 --cuda-graph --compile
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms as T

from fracturescan.data.cache import build_cache
from fracturescan.data.mura import load_mura
from fracturescan.data.records import ImageRecord
from fracturescan.data.synth import generate_mura_phantoms
from fracturescan.config import AugmentConfig
from fracturescan.data.transforms import augment_batch, normalise
from fracturescan.models.registry import IMAGENET_MEAN, IMAGENET_STD
from fracturescan.inference import resolve_device
from fracturescan.models import build_model
from fracturescan.training.step import GPU_SYNC_EVERY, GRAPH_WARMUP_STEPS, TrainStep, make_optimizer

#: MURA v1.1 XR_WRIST training images: the epoch the per-epoch times are quoted for.
MURA_WRIST_TRAIN = 9752
#: Distinct phantoms generated; larger sets repeat them under new file names (decoding is what
#: costs, not novelty, and generation is slow).
MAX_UNIQUE = 512


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images", type=int, default=1024, help="PNG files in the training set")
    p.add_argument("--steps", type=int, default=20, help="timed optimiser steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--batch-size", type=int, default=32, help="batch of the naive path (the original recipe)")
    p.add_argument("--fast-batch-sizes", default=None,
                   help="comma-separated fast-path batches (default: 32,128,256 on CUDA, --batch-size on CPU)")
    p.add_argument("--workers", type=int, default=min(8, len(os.sched_getaffinity(0))),
                   help="DataLoader workers of the naive path")
    p.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time the fast path with the whole step captured in a CUDA graph (CUDA only)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads of the main process (default: torch's choice); "
                        "1 is steadier on a small CPU shared with other jobs")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_dataset(root: Path, n_images: int, size: int, seed: int) -> list[ImageRecord]:
    """``n_images`` labelled phantom PNGs (source images ~15% larger than the model input)."""
    source = max(32, int(size * 1.15))
    studies = max(2, min(n_images, MAX_UNIQUE) // 2)
    generate_mura_phantoms(root / "phantoms", studies, source, seed)
    unique = load_mura(root / "phantoms", "train") + load_mura(root / "phantoms", "valid")
    records = []
    for i in range(n_images):
        base = unique[i % len(unique)]
        path = base.path
        if i >= len(unique):  # a distinct file, so the page cache is no kinder to repeats
            path = root / "copies" / f"{i:06d}.png"
            path.parent.mkdir(exist_ok=True)
            shutil.copyfile(base.path, path)
        records.append(ImageRecord(path, base.label, f"s{i}", f"p{i}"))
    return records


def _grey_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1)


class PngDataset(Dataset):
    """The naive path: PIL decode and torchvision transforms per item, in DataLoader workers."""

    def __init__(self, records: list[ImageRecord], size: int, aug: AugmentConfig) -> None:
        self.items = [(str(r.path), float(r.label)) for r in records]
        self.transform = T.Compose([
            T.Resize((size, size)), T.RandomHorizontalFlip(aug.hflip), T.RandomRotation(aug.rotation),
            T.ColorJitter(brightness=aug.brightness, contrast=aug.contrast), T.ToTensor(),
            T.Lambda(_grey_to_rgb), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        """Number of images."""
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        """(normalised 3-channel tensor, label) of image ``i``."""
        path, label = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert("L")), label


def naive_batches(records: list[ImageRecord], size: int, batch: int, n_batches: int, workers: int,
                  device: torch.device, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from the PIL/DataLoader path, moved to ``device``."""
    ds = PngDataset(records, size, AugmentConfig())
    sampler = RandomSampler(ds, replacement=True, num_samples=batch * n_batches,
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.float().to(device, non_blocking=True)


def fast_batches(pixels: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device,
                 seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from the device-resident uint8 cache, augmented and normalised on the device."""
    gen = torch.Generator().manual_seed(seed)
    aug = AugmentConfig()
    while True:
        idx = torch.randint(len(pixels), (batch,), generator=gen).to(device)
        x = normalise(augment_batch(pixels[idx], aug, gen), IMAGENET_MEAN, IMAGENET_STD)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels[idx]


def time_training(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batches: Iterator, steps: int,
                  warmup: int, device: torch.device, sync_every: int) -> float:
    """Images per second over ``steps`` timed steps (input included), after ``warmup`` steps;
    the loss is read back to the host every ``sync_every`` steps."""
    seen, t0 = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0, seen = time.perf_counter(), 0
        x, y = next(batches)
        loss = step(x, y)
        if (i + 1) % sync_every == 0:
            loss.item()
        seen += len(x)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def naive_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The original recipe's step: fp32, plain BCE, Adam lr 1e-4."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def fast_step(model: torch.nn.Module, device: torch.device, cuda_graph: bool) -> TrainStep:
    """The training loop's step (bf16 on CUDA), with equal class weights."""
    model.train()
    opt = make_optimizer(model, 1e-4, 0.0, cuda_graph)
    return TrainStep(model, opt, (0.5, 0.5), device, amp=device.type == "cuda", cuda_graph=cuda_graph)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(arch: str, seed: int, device: torch.device, fast: bool) -> torch.nn.Module:
    """The same random-init model for every configuration."""
    torch.manual_seed(seed)
    model = build_model(arch, weights="none").to(device)
    return model.to(memory_format=torch.channels_last) if fast and device.type == "cuda" else model


def machine(device: torch.device) -> dict[str, str]:
    """Device, CPU, versions and load: what a reader needs to compare numbers."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU run)"
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "device": str(device),
        "gpu": gpu, "cpu": f"{cpu}, {len(os.sched_getaffinity(0))} usable cores",
        "torch": torch.__version__, "python": platform.python_version(),
        "load average (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run(args: argparse.Namespace, root: Path) -> tuple[list[tuple[str, int, float]], float]:
    """Time every configuration; return (rows of (name, batch, images/s), cache build seconds)."""
    device = resolve_device(args.device)
    records = make_dataset(root, args.images, args.image_size, args.seed)
    rows: list[tuple[str, int, float]] = []
    steps, warm, bs = args.steps, args.warmup, args.batch_size
    batches = naive_batches(records, args.image_size, bs, steps + warm, args.workers, device, args.seed)
    rows.append(("naive: PIL DataLoader, fp32", bs,
                 time_training(naive_step(fresh_model(args.arch, args.seed, device, False)), batches, steps, warm,
                               device, 1)))
    t0 = time.perf_counter()
    cache = build_cache(records, args.image_size, root / "cache", desc="caching")
    cache_s = time.perf_counter() - t0
    pixels = torch.from_numpy(np.array(cache.pixels)).to(device)
    labels = torch.from_numpy(cache.labels).to(device)
    label = "fast: cache on device" + (", bf16, channels_last" if device.type == "cuda" else ", fp32")
    # (name, model wrapper, capture the step in a CUDA graph)
    variants: list[tuple[str, Callable[[torch.nn.Module], torch.nn.Module], bool]] = [(label, lambda m: m, False)]
    if args.compile:
        variants.append((label + ", torch.compile", torch.compile, False))
    if args.cuda_graph:
        variants.append((label + ", CUDA graph", lambda m: m, True))
    sync_every = GPU_SYNC_EVERY if device.type == "cuda" else 1
    for name, wrap, graph in variants:
        for fb in fast_sizes(args, device):
            step = fast_step(wrap(fresh_model(args.arch, args.seed, device, True)), device, graph)
            # A graph is captured after its eager warm-up steps: keep capture out of the timing.
            warm_up = max(warm, GRAPH_WARMUP_STEPS + 2) if graph else warm
            ips = time_training(step, fast_batches(pixels, labels, fb, device, args.seed), steps, warm_up, device,
                                sync_every)
            rows.append((name, fb, ips))
    return rows, cache_s


def fast_sizes(args: argparse.Namespace, device: torch.device) -> list[int]:
    """Fast-path batch sizes to time."""
    if args.fast_batch_sizes:
        return [int(s) for s in args.fast_batch_sizes.split(",") if s.strip()]
    return [32, 128, 256] if device.type == "cuda" else [args.batch_size]


def report(args: argparse.Namespace, rows: list[tuple[str, int, float]], cache_s: float) -> None:
    """Print the machine and the table (ratios against the naive path)."""
    for key, value in machine(resolve_device(args.device)).items():
        print(f"{key:>26}: {value}")
    print(f"{'setup':>26}: {args.arch} (random init), {args.image_size} px, {args.images} phantom PNGs, "
          f"{args.steps} timed steps after {args.warmup} warm-up, {args.workers} DataLoader workers, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'cache build (one-off)':>26}: {cache_s:.1f} s for {args.images} images")
    base = rows[0][2]
    table = [("path", "batch", "images/s", f"s per {MURA_WRIST_TRAIN:,}-image epoch", "vs naive")]
    table += [(name, str(b), f"{ips:.1f}", f"{MURA_WRIST_TRAIN / ips:.0f}", f"{ips / base:.2f}x")
              for name, b, ips in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    """Run the benchmark and print the table."""
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cuda_graph and resolve_device(args.device).type != "cuda":
        raise SystemExit("error: --cuda-graph needs a CUDA device (pass --device cuda on a GPU machine).")
    if resolve_device(args.device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    with tempfile.TemporaryDirectory(prefix="fs-train-bench-") as tmp:
        rows, cache_s = run(args, Path(tmp))
    report(args, rows, cache_s)


if __name__ == "__main__":
    main()
