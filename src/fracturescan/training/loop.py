"""The fit loop: data → cache → model → epochs with hold-out validation → best checkpoint.

A run directory holds ``config.yaml`` (resolved), ``split.json`` (hold-out patients and data
fingerprints), ``history.csv``, ``tensorboard/`` events, ``state/last.pt`` (for ``--resume``) and
``best/`` (the checkpoint, see DESIGN.md). After training the decision threshold is chosen on the
patient-level hold-out and stored in the checkpoint; MURA's ``valid`` split is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import TrainConfig, save_config
from ..data.cache import build_cache
from ..data.sources import DataIndex, fingerprint_records, open_dataset
from ..data.split import patient_holdout
from ..data.transforms import augment_batch
from ..devices import resolve_device
from ..errors import ConfigError, FracturescanError
from ..evaluation.metrics import aggregate_studies, binary_metrics
from ..evaluation.threshold import choose_threshold
from ..explain.reference import calibrate, compute_reference, save_reference
from ..checkpoint import Checkpoint
from ..inference import predict_pixels
from ..models import build_model, save_checkpoint
from ..models.preprocessing import Preprocessing
from ..trust import fit_trust, store_trust
from .callbacks import EarlyStopping, atomic_torch_save, write_history, write_skipped
from .distributed import (DistContext, all_reduce_sum, barrier, batches, epoch_order, init_distributed, shard,
                          shutdown)
from .losses import class_weights, weighted_bce
from .monitor import best_epoch, monitor_mode, plateau_scheduler
from .step import GPU_SYNC_EVERY, TrainStep, check_cuda_graph, keep_tensor_lr, make_optimizer, tensor_lrs

log = logging.getLogger(__name__)


class TrainingDivergedError(FracturescanError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    """Where the run went and how it ended."""

    run_dir: Path
    best_dir: Path
    epochs_run: int
    best_value: float
    threshold: float
    holdout_metrics: dict


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (dropout draws from torch's global generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Augmentation randomness for one epoch on one rank: derived from (seed, epoch, rank) so a
    resumed run draws exactly what the uninterrupted run would have drawn."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def _subsample(records: list, limit: int | None, seed: int) -> list:
    """Keep whole studies until about ``limit`` images (for quick experiments)."""
    if not limit or len(records) <= limit:
        return records
    studies = sorted({r.study_id for r in records})
    order = np.random.default_rng(seed).permutation(len(studies))
    keep: set[str] = set()
    count = 0
    per_study = {s: 0 for s in studies}
    for r in records:
        per_study[r.study_id] += 1
    for i in order:
        if count >= limit:
            break
        keep.add(studies[i])
        count += per_study[studies[i]]
    return [r for r in records if r.study_id in keep]


class _Data:
    """Train and hold-out pixels as tensors (uint8; on the GPU when training there)."""

    def __init__(self, cfg: TrainConfig, index: DataIndex, device: torch.device, run_dir: Path,
                 ctx: DistContext) -> None:
        records = _subsample(list(index.split("train")), cfg.max_train_images, cfg.seed)
        train, holdout = patient_holdout(records, cfg.holdout_fraction, cfg.seed)
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
        if not ctx.is_main:
            barrier(ctx)  # rank 0 decodes; the others then open the finished cache
        #: The run's input contract, resolved once (architecture defaults + config overrides).
        self.preprocessing: Preprocessing = cfg.preprocessing()
        size = self.preprocessing.input_size
        self.train_cache = build_cache(train, size, cache_dir, desc="caching train")
        self.hold_cache = build_cache(holdout, size, cache_dir, desc="caching hold-out")
        if ctx.is_main:
            barrier(ctx)
        skipped = self.train_cache.skipped + self.hold_cache.skipped
        if skipped and ctx.is_main:
            write_skipped(run_dir / "skipped_images.csv", skipped)
        # The whole uint8 set fits in memory (MURA wrist at 224 px ≈ 0.5 GB): index batches directly.
        self.x_train = torch.from_numpy(np.array(self.train_cache.pixels)).to(device)
        self.y_train = torch.from_numpy(self.train_cache.labels).to(device)
        self.x_hold = np.array(self.hold_cache.pixels)
        self.y_hold = self.hold_cache.labels
        self.hold_studies = [r.study_id for r in self.hold_cache.records]
        self.fingerprint = fingerprint_records(records)
        split = {
            "data": str(index.root), "kind": index.kind, "synthetic": index.synthetic,
            "fingerprint": self.fingerprint,
            "train_fingerprint": fingerprint_records(self.train_cache.records),
            "holdout_fingerprint": fingerprint_records(self.hold_cache.records),
            "train_images": len(self.train_cache.records), "holdout_images": len(self.hold_cache.records),
            "holdout_patients": sorted({r.patient_id for r in self.hold_cache.records}),
            "skipped": len(skipped),
        }
        if ctx.is_main:
            (run_dir / "split.json").write_text(json.dumps(split, indent=1))


def _train_epoch(step: TrainStep, data: _Data, cfg: TrainConfig, device, epoch: int,
                 ctx: DistContext) -> tuple[float, int]:
    """One pass over this rank's share of the training set; returns (mean loss, images seen),
    both summed over all ranks."""
    step.model.train()
    mine = shard(epoch_order(len(data.x_train), cfg.seed, epoch), ctx)
    gen = augment_generator(cfg.seed, epoch, ctx.rank)
    # The loss sum stays on the device; reading it back stalls a GPU, so that happens only every
    # GPU_SYNC_EVERY batches there (every batch on the CPU, where it costs nothing).
    sync_every = GPU_SYNC_EVERY if device.type == "cuda" else 1
    total, seen = torch.zeros((), device=device), 0
    bar = tqdm(batches(mine, cfg.batch_size), desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=not ctx.is_main)
    # DDP's join lets ranks with one batch fewer finish without hanging the others.
    with Join([getattr(step.model, "_orig_mod", step.model)]) if ctx.enabled else contextlib.nullcontext():
        for batch_no, idx in enumerate(bar):
            idx = idx.to(device)
            x = data.preprocessing.normalise(augment_batch(data.x_train[idx], cfg.augment, gen))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            total += step(x, data.y_train[idx]) * len(idx)
            seen += len(idx)
            if (batch_no + 1) % sync_every == 0 or seen == len(mine):
                running = float(total)
                if not math.isfinite(running):
                    raise TrainingDivergedError(
                        f"Loss became {running} at epoch {epoch}, batch {batch_no}: lower --lr or "
                        "check the data; the last good checkpoint is kept in best/."
                    )
                bar.set_postfix(loss=f"{running / seen:.4f}")
    total, seen = all_reduce_sum([float(total), float(seen)], ctx, device)
    return total / max(seen, 1), int(seen)


def _validate(model, data: _Data, cfg: TrainConfig, weights, device,
              progress: bool = True) -> tuple[float, float, float, np.ndarray]:
    probs = predict_pixels(model, data.x_hold, preprocessing=data.preprocessing, device=device,
                           batch_size=cfg.eval_batch_size, progress=progress)
    p = torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7)
    loss = float(weighted_bce(torch.logit(p), torch.from_numpy(data.y_hold), weights))
    auc = binary_metrics(data.y_hold, probs, 0.5)["auc"]
    studies = aggregate_studies(data.hold_studies, data.y_hold, probs)
    study_auc = binary_metrics(studies.y_true, studies.y_prob, 0.5)["auc"]
    nan = float("nan")
    return loss, nan if auc is None else auc, nan if study_auc is None else study_auc, probs


def _metadata(cfg: TrainConfig, index: DataIndex, data: _Data, epoch: int, history: list[dict]) -> dict:
    return {
        "arch": cfg.arch, "hidden": cfg.hidden, "dropout": cfg.dropout, **data.preprocessing.to_metadata(),
        "threshold": 0.5, "threshold_method": "default (not yet chosen)",
        "training_config": cfg.to_dict(), "metrics": {"epoch": epoch, "history": history[-1]},
        "data_fingerprint": data.fingerprint, "synthetic": index.synthetic,
        "body_parts": sorted({r.body_part for r in data.train_cache.records}),
    }


def train(cfg: TrainConfig, *, resume: bool = False) -> TrainResult | None:
    """Train a model as configured; with ``resume`` continue from ``state/last.pt``.

    Under torchrun every rank calls this; rank 0 returns the result, the others None.
    """
    if not cfg.data:
        raise ConfigError("No training data given: pass --data PATH (MURA root, CSV or folder).")
    run_dir = Path(cfg.out)
    state_path = run_dir / "state" / "last.pt"
    if resume and not state_path.is_file():
        raise ConfigError(f"Nothing to resume in {run_dir}: {state_path} does not exist.")
    if not resume and (run_dir / "history.csv").exists():
        raise ConfigError(f"{run_dir} already holds a run: choose a new --out or pass --resume.")
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    try:
        if cfg.cuda_graph:  # refuse before any data work
            check_cuda_graph(device, ctx.enabled, cfg.compile)
        return _train(cfg, resume, run_dir, state_path, device, ctx)
    finally:
        shutdown(ctx)


def _train(cfg: TrainConfig, resume: bool, run_dir: Path, state_path: Path, device: torch.device,
           ctx: DistContext) -> TrainResult | None:
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if ctx.is_main:
        (run_dir / "state").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.seed + ctx.rank)
    index = open_dataset(Path(cfg.data), cfg.body_part)
    # The network (and its initial weights: a missing or failed ImageNet download) before the
    # slow cache, so such an error comes at once. Building the data draws nothing from torch's
    # generator, so the initial weights are those of the same seed either way.
    model = build_model(cfg.arch, weights=cfg.weights, hidden=cfg.hidden, dropout=cfg.dropout)
    data = _Data(cfg, index, device, run_dir, ctx)
    weights = class_weights(data.y_train.cpu())
    log.info("Training %s on %d images (hold-out %d), class weights normal=%.3f abnormal=%.3f, device %s",
             cfg.arch, len(data.x_train), len(data.x_hold), *weights, device)

    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = model  # the bare module: validation and checkpoints use it
    if ctx.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)  # compiled after DDP wrapping, as DDP's docs recommend
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.cuda_graph)
    step = TrainStep(model, opt, weights, device, cfg.amp, cuda_graph=cfg.cuda_graph)
    mode = monitor_mode(cfg.monitor)
    sched = plateau_scheduler(opt, cfg.monitor, factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr)
    early = EarlyStopping(cfg.early_stopping_patience, mode)
    history: list[dict] = []
    start_epoch = 1
    if resume:
        state = torch.load(state_path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        early.load_state_dict(state["early"])
        if ctx.is_main:
            torch.set_rng_state(state["torch_rng"])
        history, start_epoch = list(state["history"]), int(state["epoch"]) + 1
        log.info("Resuming %s at epoch %d", run_dir, start_epoch)
    lrs = tensor_lrs(opt, device) if cfg.cuda_graph else []  # after resuming: the graph reads these

    from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training

    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_epoch) if ctx.is_main else None
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if early.should_stop:
                break
            t0 = time.perf_counter()
            train_loss, seen = _train_epoch(step, data, cfg, device, epoch, ctx)
            # Every rank validates the same weights on the whole hold-out, so all ranks take the
            # same scheduler and early-stopping decisions without extra communication.
            val_loss, val_auc, val_study_auc, _ = _validate(net, data, cfg, weights, device, progress=ctx.is_main)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_auc": val_auc,
                   "val_study_auc": val_study_auc, "lr": float(opt.param_groups[0]["lr"]),
                   "seconds": time.perf_counter() - t0, "train_images": seen}
            history.append(row)
            monitored = row[cfg.monitor]
            sched.step(monitored if not math.isnan(monitored) else (math.inf if mode == "min" else -math.inf))
            keep_tensor_lr(opt, lrs)
            improved = early.improved(monitored)
            if not ctx.is_main:
                continue
            for key in ("train_loss", "val_loss", "val_auc", "val_study_auc", "lr"):
                writer.add_scalar(key, row[key], epoch)
            if improved:
                save_checkpoint(run_dir / "best", net, _metadata(cfg, index, data, epoch, history))
            log.info("epoch %d: train_loss %.4f val_loss %.4f val_auc %.4f val_study_auc %.4f (%.1fs)",
                     epoch, train_loss, val_loss, val_auc, val_study_auc, row["seconds"])
            atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "early": early.state_dict(),
                               "torch_rng": torch.get_rng_state(), "history": history, "epoch": epoch},
                              state_path)
            write_history(run_dir / "history.csv", history)
    finally:
        if writer is not None:
            writer.close()
    if not ctx.is_main:
        return None
    if not (run_dir / "best" / "metadata.json").is_file():
        raise TrainingDivergedError(f"No epoch produced a usable checkpoint in {run_dir}.")
    return _finalise(cfg, run_dir, data, weights, device, history, early)


def _finalise(cfg, run_dir: Path, data: _Data, weights, device, history, early) -> TrainResult:
    """Choose the decision threshold on the hold-out with the best model and store it."""
    best = Checkpoint.open(run_dir / "best")
    model = best.load_model(device)
    _, _, _, probs = _validate(model.to(device), data, cfg, weights, device)
    studies = aggregate_studies(data.hold_studies, data.y_hold, probs)
    choice = choose_threshold(data.y_hold, probs, cfg.threshold_method, target_sensitivity=cfg.target_sensitivity)
    metrics = {
        "holdout_image": binary_metrics(data.y_hold, probs, choice.value),
        "holdout_study": binary_metrics(studies.y_true, studies.y_prob, choice.value),
        "best_epoch": best_epoch(history, cfg.monitor),
        "epochs_run": len(history),
    }
    best = best.update(threshold=choice.value,
                       threshold_method=f"{choice.method} on the patient-level hold-out", metrics=metrics)
    # The typical-normal reference that heatmaps are measured against, and their colour scale
    # from the hold-out's abnormal images (explain/reference.py).
    reference = compute_reference(model, data.x_train[data.y_train == 0], preprocessing=data.preprocessing,
                                  seed=cfg.seed)
    abnormal = data.x_hold[data.y_hold == 1]
    if len(abnormal) == 0:
        abnormal = data.x_train[data.y_train == 1].cpu()
    save_reference(best.directory, calibrate(model, reference, abnormal, preprocessing=data.preprocessing, seed=cfg.seed))
    # Calibration, the two operating points and the input guard, all from the hold-out (the
    # guard's Gaussians from the training images); the threshold moves to the calibrated scale.
    trust = store_trust(best.directory, fit_trust(
        model, pixels=data.x_hold, labels=data.y_hold, study_ids=data.hold_studies, threshold=choice.value,
        old_temperature=1.0, fitted_on="patient-level hold-out", preprocessing=data.preprocessing,
        guard_fit=(data.x_train.cpu().numpy(), data.y_train.cpu().numpy()),
        data_fingerprint=fingerprint_records(data.hold_cache.records)))
    log.info("Threshold %.4f (%s on hold-out, calibrated scale); best checkpoint in %s", trust.threshold,
             choice.method, run_dir / "best")
    return TrainResult(run_dir, run_dir / "best", len(history), early.best, trust.threshold, metrics)
