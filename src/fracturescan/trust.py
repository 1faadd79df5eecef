"""Fitting the decision rule onto a checkpoint: calibration, operating points, input guard.

Two callers: the end of training (all three from the patient-level hold-out; the guard's Gaussians
from the training images) and ``fracturescan calibrate RUN DATA`` (local recalibration on a site's
own labelled studies, recording which data were used). What is fitted is applied by
:mod:`fracturescan.decision`; this module only fits and stores.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from .errors import DatasetError, FracturescanError
from .evaluation.metrics import aggregate_studies
from .evaluation.operating import DecisionPoints, choose_decision_points
from .evaluation.temperature import Calibration, apply_temperature, fit_temperature
from .models.preprocessing import Preprocessing
from .guard import DEFAULT_KEEP, GuardInfo, GuardModel, build_guard, pooled_features, save_guard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustFit:
    """What one fit produced; a piece that could not be fitted is None with its reason in ``unavailable``."""

    calibration: Calibration | None
    points: DecisionPoints | None
    guard: GuardInfo | None
    threshold: float
    unavailable: dict[str, str]
    #: The guard's statistics (written to its side file by :func:`store_trust`).
    guard_model: GuardModel | None = dataclasses.field(default=None, compare=False, repr=False)

    def metadata_fields(self) -> dict[str, Any]:
        """The ``metadata.json`` fields to write (``calibration``, ``decision_points``, ``guard``, ``threshold``)."""
        def section(value: Any, name: str) -> dict[str, Any]:
            if value is not None:
                return value.to_dict()
            return {"unavailable": self.unavailable[name]} if name in self.unavailable else {}
        return {"calibration": section(self.calibration, "calibration"),
                "decision_points": section(self.points, "operating points"),
                "guard": section(self.guard, "input guard"), "threshold": float(self.threshold)}


def recalibrated_threshold(threshold: float, old_temperature: float, new_temperature: float) -> float:
    """The threshold on the new calibrated scale that splits images exactly where ``threshold``
    did on the old one (the same raw logit)."""
    p = min(max(float(threshold), 1e-12), 1 - 1e-12)
    raw = old_temperature * (math.log(p) - math.log1p(-p))
    return float(apply_temperature([raw], new_temperature)[0])


def fit_trust(model: nn.Module, *, pixels: np.ndarray, labels: Sequence[int], study_ids: Sequence[str],
              threshold: float, old_temperature: float, fitted_on: str, preprocessing: Preprocessing,
              guard_fit: tuple[np.ndarray, np.ndarray] | None = None, guard_threshold_pixels: np.ndarray | None = None,
              data_fingerprint: str | None = None,
              target_sensitivity: float = 0.95, target_specificity: float = 0.95, keep: float = DEFAULT_KEEP,
              strict: bool = False) -> TrustFit:
    """Fit calibration, operating points and (when ``guard_fit`` gives its training images and
    labels) the input guard on held-out ``pixels`` with their ``labels`` and ``study_ids``. The
    guard's threshold comes from ``guard_threshold_pixels`` (default: ``pixels``); they must not
    be among ``guard_fit``'s images.

    ``threshold`` is the single decision threshold on the scale of ``old_temperature``; it is moved
    to the new calibrated scale (same images on each side). With ``strict`` a piece that cannot be
    fitted raises its error; otherwise its reason is recorded and the others are still fitted.

    Raises:
        DatasetError: ``pixels``, ``labels`` and ``study_ids`` differ in length; with ``strict``,
            whatever a piece's fit raises (one class only, too few studies or images).
    """
    labels_arr = np.asarray(labels)
    if not len(pixels) == len(labels_arr) == len(study_ids):
        raise DatasetError(f"calibration data do not match: {len(pixels)} images, {len(labels_arr)} labels, "
                           f"{len(study_ids)} study ids")
    logits, _ = pooled_features(model, pixels, (), preprocessing=preprocessing)
    unavailable: dict[str, str] = {}

    def attempt(name: str, fit):
        try:
            return fit()
        except FracturescanError as exc:
            if strict:
                raise
            unavailable[name] = str(exc)
            log.warning("%s not fitted: %s", name, exc)
            return None

    calibration = attempt("calibration", lambda: fit_temperature(
        logits, labels_arr, fitted_on=fitted_on, study_ids=study_ids, data_fingerprint=data_fingerprint))
    temperature = calibration.temperature if calibration else old_temperature
    threshold = recalibrated_threshold(threshold, old_temperature, temperature)
    probs = apply_temperature(logits, temperature)
    studies = aggregate_studies(list(study_ids), labels_arr, probs)
    points = attempt("operating points", lambda: choose_decision_points(
        studies.y_true, studies.y_prob, threshold=threshold, fitted_on=fitted_on,
        target_sensitivity=target_sensitivity, target_specificity=target_specificity))
    guard = None
    if guard_fit is not None:
        guard = attempt("input guard", lambda: build_guard(
            model, guard_fit[0], guard_fit[1], pixels if guard_threshold_pixels is None else guard_threshold_pixels,
            preprocessing=preprocessing, keep=keep, fitted_on=fitted_on))
    return TrustFit(calibration, points, None if guard is None else guard[1], threshold, unavailable,
                    None if guard is None else guard[0])


def store_trust(directory: Path, fit: TrustFit) -> TrustFit:
    """Write the guard file (when fitted) and the metadata fields into a checkpoint directory;
    returns ``fit`` with the guard's recorded SHA-256."""
    from .checkpoint import Checkpoint

    directory = Checkpoint.open(directory).directory
    if fit.guard_model is not None and fit.guard is not None:
        fit = dataclasses.replace(fit, guard=save_guard(directory, fit.guard_model, fit.guard))
    Checkpoint.open(directory).update(**fit.metadata_fields())
    return fit


def calibrate_checkpoint(model_dir: Path | str, data: Path | str, *, split: str = "train", body_part: str | None = None,
                         device: str = "auto", target_sensitivity: float = 0.95, target_specificity: float = 0.95,
                         keep: float = DEFAULT_KEEP, guard: bool = True, seed: int = 0) -> TrustFit:
    """Local recalibration: refit calibration, operating points and (with ``guard``) the input guard
    of an existing checkpoint on the labelled studies of ``data``'s ``split``, and store them.

    The guard's Gaussians come from a patient-level half of the studies and its threshold from the
    other half. Every piece must fit: bad data raise, and the checkpoint is left unchanged.

    Raises:
        DatasetError: unreadable data, one class only, too few studies or images for a piece.
    """
    from .data.cache import build_cache
    from .data.sources import fingerprint_records, open_dataset
    from .data.split import patient_holdout
    from .inference import Predictor

    predictor = Predictor.from_checkpoint(model_dir, device=device, backend="torch")
    meta = predictor.metadata
    parts = body_part or (",".join(meta.body_parts) if meta.body_parts else "all")
    index = open_dataset(Path(data), parts)
    records = list(index.split(split))
    cache = build_cache(records, predictor.image_size, None, desc=f"reading {split}")
    if not len(cache.records):
        raise DatasetError(f"none of the {len(records)} images of {data} ({split}) could be read")
    used = list(cache.records)
    pixels = np.asarray(cache.pixels)
    fitted_on = f"local recalibration on {index.root} (split {split}, {len({r.study_id for r in used})} studies)"
    guard_fit = guard_threshold = None
    if guard:
        fit_part, threshold_part = patient_holdout(used, 0.5, seed)
        position = {id(r): i for i, r in enumerate(used)}
        fit_idx = [position[id(r)] for r in fit_part]
        guard_fit = (pixels[fit_idx], np.array([r.label for r in fit_part]))
        guard_threshold = pixels[[position[id(r)] for r in threshold_part]]
    fit = fit_trust(
        predictor.model, pixels=pixels, labels=[r.label for r in used], study_ids=[r.study_id for r in used],
        threshold=meta.threshold, old_temperature=predictor.rule.temperature, fitted_on=fitted_on,
        preprocessing=predictor.preprocessing, guard_fit=guard_fit, guard_threshold_pixels=guard_threshold,
        data_fingerprint=fingerprint_records(used),
        target_sensitivity=target_sensitivity, target_specificity=target_specificity, keep=keep, strict=True)
    if not guard and predictor.rule.guard is not None:  # keep the existing guard as it is
        fit = dataclasses.replace(fit, guard=predictor.rule.guard)
    return store_trust(Path(model_dir), fit)
