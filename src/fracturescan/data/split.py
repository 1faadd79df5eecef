"""Patient-level hold-out carved from the training split.

Early stopping and threshold choice use this hold-out, never MURA's ``valid`` (the test set).
Whole patients go to one side, so no patient's images appear on both sides.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from .records import ImageRecord


def patient_holdout(
    records: list[ImageRecord] | tuple[ImageRecord, ...], fraction: float = 0.1, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split records into (train, holdout) by patient, stratified by whether a patient has an
    abnormal study, so both sides keep both classes whenever the data allow.

    The holdout receives about ``fraction`` of the studies (at least one patient per class).
    """
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"Hold-out fraction must be between 0 and 1, got {fraction}.")
    by_patient: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_patient.setdefault(record.patient_id, []).append(record)
    if len(by_patient) < 2:
        raise DatasetError("Need at least two patients to carve a patient-level hold-out.")
    rng = np.random.default_rng(seed)
    holdout_patients: set[str] = set()
    for has_positive in (False, True):
        group = sorted(p for p, rs in by_patient.items() if any(r.label for r in rs) == has_positive)
        if not group:
            continue
        order = [group[i] for i in rng.permutation(len(group))]
        target = fraction * sum(len({r.study_id for r in by_patient[p]}) for p in group)
        taken = 0
        for patient in order[: max(len(order) - 1, 1)]:  # leave at least one patient for training
            if taken >= target and taken > 0:
                break
            holdout_patients.add(patient)
            taken += len({r.study_id for r in by_patient[patient]})
    train = [r for r in records if r.patient_id not in holdout_patients]
    holdout = [r for r in records if r.patient_id in holdout_patients]
    if not train or not holdout:
        raise DatasetError("The data are too small to carve a patient-level hold-out.")
    return train, holdout
