"""Evaluate a trained run on a data split and write the report (the library side of
``fracturescan evaluate``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from ..data.cache import build_cache
from ..data.sources import open_dataset
from ..errors import ConfigError
from ..inference import Predictor
from .report import write_evaluation_report
from .trust_report import decision_rule_metrics

log = logging.getLogger(__name__)


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


#: Images per progress step of the evaluation's inference (the predictor batches within it).
_PROGRESS_CHUNK = 512


def _assess(predictor: Predictor, pixels: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The predictor's raw logits and input-guard scores (None without a guard) for every cached
    image, with a progress bar on long sets."""
    starts = range(0, len(pixels), _PROGRESS_CHUNK)
    parts = [predictor.assess(pixels[start:start + _PROGRESS_CHUNK])
             for start in tqdm(starts, desc="predicting", unit="chunk", delay=2, leave=False)]
    if not parts:
        return np.empty(0), None
    logits = np.concatenate([z for z, _ in parts])
    return logits, None if parts[0][1] is None else np.concatenate([g for _, g in parts])


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "valid",
    data: Path | None = None,
    out: Path | None = None,
    n_boot: int = 1000,
    device: str = "auto",
    seed: int = 0,
    tta: bool = False,
) -> tuple[dict, Path]:
    """Predict every image of ``split`` with the run's best checkpoint and write the report.

    The decision threshold is the one stored in the checkpoint (chosen on the training hold-out);
    nothing here is tuned on the evaluated split. ``tta``: average each image over the
    checkpoint's test-time views (:mod:`fracturescan.tta`). Returns (metrics, report directory).
    """
    run_dir = Path(run_dir)
    predictor = Predictor.from_checkpoint(run_dir, device=device, tta=tta)
    meta = predictor.metadata
    # A checkpoint without its run's config.yaml (e.g. an ensemble) names its data in its metadata.
    cfg = _run_config(run_dir) or dict(meta.training_config or {})
    data = Path(data) if data else (Path(cfg["data"]) if cfg.get("data") else None)
    if data is None:
        raise ConfigError(f"{run_dir} has no config.yaml naming its data: pass --data PATH.")
    index = open_dataset(data, cfg.get("body_part", "XR_WRIST"))
    records = index.split(split)
    cache = build_cache(records, predictor.image_size, Path(cfg["cache_dir"]) if cfg.get("cache_dir") else None,
                        desc=f"caching {split}")
    # Raw logits and guard scores once; the probabilities are the checkpoint's calibrated ones.
    logits, guard_scores = _assess(predictor, cache.pixels)
    probs = predictor.rule.probabilities(logits)
    out = Path(out) if out else run_dir / f"eval_{split}"
    kept = cache.records
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rule = decision_rule_metrics(out, y_true=[r.label for r in kept], logits=logits,
                                 study_ids=[r.study_id for r in kept], patient_ids=[r.patient_id for r in kept],
                                 rule=predictor.rule, guard_scores=guard_scores, n_boot=n_boot, seed=seed)
    history = run_dir / "history.csv"
    metrics = write_evaluation_report(
        out,
        paths=[str(r.path) for r in kept],
        study_ids=[r.study_id for r in kept],
        patient_ids=[r.patient_id for r in kept],
        y_true=[r.label for r in kept],
        y_prob=probs,
        threshold=predictor.threshold,
        threshold_source=str(meta.threshold_method),
        split=split,
        model_info={"arch": meta.arch, "input_size": meta.input_size, "run": str(run_dir),
                    "data": str(index.root), "body_parts": list(meta.body_parts or []),
                    "skipped_images": len(cache.skipped),
                    "best_epoch": (meta.metrics or {}).get("best_epoch"), "monitor": cfg.get("monitor", "val_loss"),
                    **({"test_time_augmentation": predictor.tta.describe()} if predictor.tta else {})},
        synthetic=bool(index.synthetic or meta.synthetic),
        history_csv=history if history.is_file() else None,
        monitor=cfg.get("monitor", "val_loss"),
        n_boot=n_boot,
        seed=seed,
        # The MURA per-body-part table; generic data sets (no parts) leave it out.
        body_parts=None if all(r.body_part == "unknown" for r in kept) else [r.body_part for r in kept],
        decision_rule=rule,
    )
    log.info("Evaluation report written to %s", out)
    return metrics, out
