"""Inference latency: torch eager (the baseline) against ONNX Runtime, end to end.

One PNG file → decode → resize → normalise → model → probability, timed with
``Predictor.predict_image`` exactly as the CLI, app and API call it; then the throughput of a
16-image folder through ``Predictor.predict_paths``. Torch and ONNX Runtime take turns in blocks
of calls (see :func:`alternating_blocks`) so load from other processes hits both alike; figures
are reported as ratios against torch.

The model is a random-init DenseNet121 (weights do not change the cost) saved into a temporary
checkpoint and exported with ``fracturescan.export``; the images are synthetic phantoms.

In the same run: test-time augmentation (``--tta``; the checkpoint records the phantom recipe's
±5 degree rotation, so 4 views: identity, flip, ±2.5 degrees), an ensemble of two such models
(``fracturescan ensemble``), the ensemble with TTA, and the ensemble's single ONNX graph.

    python benchmarks/inference_latency.py               # DenseNet121, 224 px, 50 runs
    python benchmarks/inference_latency.py --runs 100 --threads 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fracturescan.data.synth import generate_mura_phantoms
from fracturescan.ensemble import build_ensemble
from fracturescan.export import export_onnx
from fracturescan.inference import Predictor
from fracturescan.models import build_model, save_checkpoint


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--image-size", type=int, default=224, help="model input side")
    p.add_argument("--source-size", type=int, default=512, help="height of the phantom PNGs")
    p.add_argument("--runs", type=int, default=50, help="timed single-image runs per backend")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each block of timed ones")
    p.add_argument("--batch", type=int, default=16, help="images per batch for throughput")
    p.add_argument("--batch-runs", type=int, default=5, help="timed batches per backend")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="intra-op threads for both backends (default: all usable cores)")
    return p.parse_args()


def machine() -> dict[str, str]:
    """CPU model, cores, library versions, load: what a reader needs to compare numbers."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu, "cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}",
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


#: What the checkpoints record as their training augmentation (the phantom recipe's), which
#: decides the TTA views.
AUGMENT = {"hflip": 0.5, "rotation": 5.0}


def make_inputs(root: Path, args: argparse.Namespace) -> tuple[Path, Path, list[Path]]:
    """A random-init checkpoint and an ensemble of it with a second one, both exported to ONNX,
    and ``--batch`` phantom PNG files."""
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(args.arch, weights="none")
        ckpts.append(save_checkpoint(root / f"ckpt{seed}" / "best", model, {
            "input_size": args.image_size, "training_config": {"augment": AUGMENT}}))
    ensemble = build_ensemble([c.parent for c in ckpts], root / "ensemble")
    for ckpt in (ckpts[0], ensemble):
        export_onnx(ckpt)
    studies = max(2, args.batch)  # phantom studies hold 1–4 images each: always enough
    generate_mura_phantoms(root / "phantoms", studies, args.source_size, seed=0)
    pngs = sorted((root / "phantoms").rglob("*.png"))[: args.batch]
    return ckpts[0], ensemble, pngs


def alternating_blocks(fns: dict[str, Callable[[], object]], runs: int, warmup: int,
                       block: int = 10) -> dict[str, list[float]]:
    """Seconds per call of each function, ``runs`` each, measured in alternating blocks.

    Each block is ``warmup`` untimed calls of one function, then up to ``block`` timed ones;
    the functions take turns until each has ``runs`` timings. Blocks, not single alternating
    calls: one runtime's call slows the other runtime's next call, most likely because worker
    threads keep spinning for a moment (measured on the 2-core dev machine: torch eager 110 ms
    per image when every call alternated with ONNX Runtime, 61 ms on its own). Alternating the blocks still
    spreads slow changes in background load over all functions alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(t) < runs for t in times.values()):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(min(block, runs - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def gradcam_fn(predictor: Predictor, png: Path) -> Callable[[], object] | None:
    """One image end to end with its Grad-CAM heatmap (torch only), or None if unavailable."""
    try:
        from fracturescan.explain import explain_image
    except ImportError:  # explain not present, or its optional dependency (captum) missing
        return None
    from fracturescan.data.images import read_image

    # explain_image also returns the probability, so this replaces (not adds to) predict_image.
    return lambda: explain_image(predictor, read_image(png))


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Print rows as aligned columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def pct(values: list[float], q: float) -> float:
    """The q-th percentile in milliseconds."""
    return float(np.percentile(values, q)) * 1000.0


def main() -> None:
    """Run the benchmark and print the table."""
    args = parse_args()
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)  # ORT's intra-op pool follows torch's thread count
    with tempfile.TemporaryDirectory(prefix="fs-latency-") as tmp:
        ckpt, ensemble, pngs = make_inputs(Path(tmp), args)
        predictors = {
            "torch": Predictor.from_checkpoint(ckpt, device="cpu", backend="torch"),
            "onnx": Predictor.from_checkpoint(ckpt, device="cpu"),
            "torch+tta": Predictor.from_checkpoint(ckpt, device="cpu", backend="torch", tta=True),
            "ensemble": Predictor.from_checkpoint(ensemble, device="cpu", backend="torch"),
            "ensemble+tta": Predictor.from_checkpoint(ensemble, device="cpu", backend="torch", tta=True),
            "ensemble onnx": Predictor.from_checkpoint(ensemble, device="cpu"),
        }
        assert predictors["onnx"].backend == predictors["ensemble onnx"].backend == "onnx", "ONNX export not picked up"
        one = pngs[0]
        paths: dict[str, Callable[[], object]] = {
            name: (lambda p=p: p.predict_image(one)) for name, p in predictors.items()}
        cam = gradcam_fn(predictors["torch"], one)
        if cam is not None:
            paths["torch+cam"] = cam
        single = alternating_blocks(paths, args.runs, args.warmup)
        batch = alternating_blocks(
            {name: (lambda p=p: p.predict_paths(pngs, batch_size=args.batch, progress=False))
             for name, p in predictors.items()},
            args.batch_runs, 1)
        views = len(predictors["torch+tta"].tta.views)
        report(args, single, batch, single.get("torch+cam"), len(pngs), views)


#: Table rows: (key, label); the first is the baseline.
ROWS = (("torch", "torch eager (baseline)"), ("onnx", "ONNX Runtime"), ("torch+tta", "torch + TTA ({v} views)"),
        ("ensemble", "ensemble of 2, torch"), ("ensemble+tta", "ensemble of 2 + TTA, torch"),
        ("ensemble onnx", "ensemble of 2, one ONNX graph"))


def report(args: argparse.Namespace, single: dict[str, list[float]], batch: dict[str, list[float]],
           cam: list[float] | None, n_batch: int, views: int) -> None:
    """Print the machine and the results table (ratios against torch eager)."""
    print(f"{'load average at start':>26}: {args.load_at_start}")
    for key, value in machine().items():
        print(f"{key:>26}: {value}")
    print(f"{'model':>26}: {args.arch} (random init) at {args.image_size} px, "
          f"{args.threads} threads, PNG {args.source_size} px phantom")
    base_p50 = pct(single["torch"], 50)
    base_ips = n_batch / statistics.median(batch["torch"])
    rows = [("path", "p50 ms", "p95 ms", f"batch {n_batch} img/s", "p50 speed-up vs torch")]
    for name, label in ROWS:
        ips = n_batch / statistics.median(batch[name])
        rows.append((f"{label.format(v=views)} (1 image, {args.runs} runs)", f"{pct(single[name], 50):.1f}",
                     f"{pct(single[name], 95):.1f}", f"{ips:.1f} ({ips / base_ips:.2f}x)",
                     f"{base_p50 / pct(single[name], 50):.2f}x"))
    if cam is not None:
        rows.append(("torch + Grad-CAM", f"{pct(cam, 50):.1f}", f"{pct(cam, 95):.1f}", "-",
                     f"{base_p50 / pct(cam, 50):.2f}x"))
    else:
        rows.append(("torch + Grad-CAM", "n/a", "n/a", "-", "fracturescan.explain unavailable"))
    print_table(rows)


if __name__ == "__main__":
    main()
