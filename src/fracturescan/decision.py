"""The clinical decision rules, in one place: what a study's images' logits mean.

A study's probability is the mean of its images' probabilities (the MURA paper's rule); the
CLI, the evaluation, the service (app and API) and the audit trail all call
:func:`study_probabilities` / :func:`study_probability` rather than averaging on their own.

A checkpoint carries up to three things beyond its weights (see :class:`DecisionRule`):

* a **temperature** (:mod:`fracturescan.evaluation.temperature`): every probability shown is the
  calibrated ``sigmoid(logit / T)``;
* two **operating points** (:mod:`fracturescan.evaluation.operating`): a study is *abnormal* at or
  above the high-specificity cut, *normal* below the high-sensitivity cut, *doubt* in between;
  the single-threshold decision stays alongside;
* an **input guard** (:mod:`fracturescan.guard`): an image far from the training images, or whose
  DICOM header says it is not a radiograph of the model's body part, is flagged "not like the
  training data: result unreliable" and left out of the study probability unless the caller
  insists (``include_flagged``).

:func:`decide_study` takes the rule and a study's per-image logits, guard scores and header flags
and returns a :class:`StudyDecision`; the CLI, the evaluation report, the web app and the API only
display it. A checkpoint lacking any of the three still works; :attr:`DecisionRule.missing` says
what is absent and the decision says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .guard import GUARD_MESSAGE, GuardInfo

if TYPE_CHECKING:  # evaluation imports this module (the study rule): its types are named only
    from .evaluation.operating import DecisionPoints
    from .evaluation.temperature import Calibration

__all__ = ["ABNORMAL", "DOUBT", "LEVELS", "NORMAL", "DecisionRule", "ImageDecision", "StudyDecision",
           "decide_study", "level_of", "study_probabilities", "study_probability"]

ABNORMAL, DOUBT, NORMAL = "abnormal", "doubt", "normal"
#: The three levels, most to least suspicious.
LEVELS: tuple[str, ...] = (ABNORMAL, DOUBT, NORMAL)
#: What each missing piece means for the user.
MISSING_TEXT = {
    "calibration": "no calibration: probabilities are the model's raw scores (run `fracturescan calibrate`)",
    "operating points": "no operating points: only the single-threshold decision is available "
                        "(run `fracturescan calibrate`)",
    "input guard": "no input guard: images unlike the training data are not detected "
                   "(run `fracturescan calibrate`)",
}


def study_probabilities(group_index: np.ndarray, probabilities: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's (study's) probability from its images': image ``i`` belongs to group
    ``group_index[i]`` (0..n_groups-1). A group without images gets NaN."""
    index = np.asarray(group_index, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    counts = np.bincount(index, minlength=n_groups)
    sums = np.bincount(index, weights=probs, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def study_probability(probabilities: Iterable[float | None]) -> float | None:
    """One study's probability from its images' (``None`` entries, unreadable or left-out images,
    are skipped); ``None`` when there is none. MURA's rule: the mean."""
    probs = np.array([p for p in probabilities if p is not None], dtype=np.float64)
    if probs.size == 0:
        return None
    return float(study_probabilities(np.zeros(probs.size, np.int64), probs, 1)[0])


def level_of(probability: float, points: DecisionPoints) -> str:
    """*abnormal* at or above ``points.high``, *normal* below ``points.low``, else *doubt*."""
    if probability >= points.high:
        return ABNORMAL
    return NORMAL if probability < points.low else DOUBT


def _section(meta_value: Any) -> dict[str, Any]:
    """A stored section, or {} when absent or marked unavailable."""
    return meta_value if isinstance(meta_value, dict) and meta_value and "unavailable" not in meta_value else {}


@dataclass(frozen=True)
class DecisionRule:
    """Everything a checkpoint says about turning logits into an answer.

    Attributes:
        threshold: single decision threshold on the (calibrated) probability.
        calibration: the fitted temperature, or None (T = 1).
        points: the two operating points, or None.
        guard: the input guard's summary, or None (its statistics are loaded by the predictor).
        body_parts: MURA body parts the model was trained on (for the DICOM header check).
        unavailable: {piece: why it could not be fitted}, for pieces that training tried to fit.
    """

    threshold: float
    calibration: Calibration | None = None
    points: DecisionPoints | None = None
    guard: GuardInfo | None = None
    body_parts: tuple[str, ...] = ()
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, meta: Any, threshold: float | None = None) -> DecisionRule:
        """The rule stored in a :class:`~fracturescan.models.checkpoint.CheckpointMetadata`;
        ``threshold`` overrides the stored single threshold (an admin's choice)."""
        from .evaluation.operating import DecisionPoints
        from .evaluation.temperature import Calibration

        unavailable = {}
        sections = {"calibration": getattr(meta, "calibration", {}), "operating points":
                    getattr(meta, "decision_points", {}), "input guard": getattr(meta, "guard", {})}
        for name, value in sections.items():
            if isinstance(value, dict) and "unavailable" in value:
                unavailable[name] = str(value["unavailable"])
        cal, pts, grd = (_section(v) for v in sections.values())
        return cls(
            threshold=float(meta.threshold if threshold is None else threshold),
            calibration=Calibration.from_dict(cal) if cal else None,
            points=DecisionPoints.from_dict(pts) if pts else None,
            guard=GuardInfo.from_dict(grd) if grd else None,
            body_parts=tuple(getattr(meta, "body_parts", ()) or ()),
            unavailable=unavailable,
        )

    @property
    def temperature(self) -> float:
        """The calibration temperature (1.0 when uncalibrated)."""
        return float(self.calibration.temperature) if self.calibration else 1.0

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the absent pieces: ``calibration``, ``operating points``, ``input guard``."""
        present = {"calibration": self.calibration, "operating points": self.points, "input guard": self.guard}
        return tuple(name for name, value in present.items() if value is None)

    def missing_notes(self) -> list[str]:
        """One sentence per absent piece, with the reason training gave when it tried."""
        notes = []
        for name in self.missing:
            why = self.unavailable.get(name)
            notes.append(MISSING_TEXT[name] + (f"; at training: {why}" if why else ""))
        return notes

    def probabilities(self, logits: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``sigmoid(logits / T)`` (as
        :func:`fracturescan.evaluation.temperature.apply_temperature`, overflow-safe)."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True)
class ImageDecision:
    """One image's answer.

    ``probability`` is calibrated; ``abnormal`` is the single-threshold decision; ``flags`` lists
    why the image is not trusted (DICOM header, input guard); ``used`` says whether it counted in
    the study probability. ``error`` is set (and the rest None) when the image could not be read.
    """

    name: str
    probability: float | None = None
    abnormal: bool | None = None
    level: str | None = None
    guard_score: float | None = None
    in_distribution: bool | None = None
    flags: tuple[str, ...] = ()
    used: bool = False
    error: str | None = None


@dataclass(frozen=True)
class StudyDecision:
    """A study's answer: the images' decisions and the study's.

    ``probability`` is the mean calibrated probability of the used images; ``level`` is None when
    the checkpoint has no operating points or no image was used; ``notes`` explain what was left
    out and what the checkpoint lacks.
    """

    images: tuple[ImageDecision, ...]
    probability: float | None
    abnormal: bool | None
    level: str | None
    threshold: float
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    calibrated: bool

    @property
    def flagged(self) -> tuple[ImageDecision, ...]:
        """Images carrying a guard or header flag."""
        return tuple(i for i in self.images if i.flags)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for result files and the API)."""
        return {"probability": self.probability, "abnormal": self.abnormal, "level": self.level,
                "threshold": self.threshold, "calibrated": self.calibrated, "missing": list(self.missing),
                "notes": list(self.notes), "images": [vars(i) | {"flags": list(i.flags)} for i in self.images]}


def _seq(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"decide_study: {len(values)} {name} for {n} images")
    return values


def decide_study(rule: DecisionRule, logits: Sequence[float | None], *, names: Sequence[str] | None = None,
                 guard_scores: Sequence[float | None] | None = None,
                 header_flags: Sequence[Sequence[str] | None] | None = None,
                 errors: Sequence[str | None] | None = None, include_flagged: bool = False) -> StudyDecision:
    """Apply ``rule`` to one study.

    Args:
        logits: one per image; None for an image that could not be read (give its ``errors``).
        guard_scores: the input guard's score per image (None: not computed).
        header_flags: per image, DICOM header problems found before the model ran.
        include_flagged: count flagged images in the study probability anyway.
    """
    n = len(logits)
    names = _seq(names, n, "names") if names is not None else [f"image {i + 1}" for i in range(n)]
    scores, headers, errs = _seq(guard_scores, n, "guard scores"), _seq(header_flags, n, "header flags"), \
        _seq(errors, n, "errors")
    images = []
    for name, z, score, header, err in zip(names, logits, scores, headers, errs):
        if z is None or not math.isfinite(float(z)):
            images.append(ImageDecision(str(name), error=err or "not scored"))
            continue
        p = float(rule.probabilities([float(z)])[0])
        flags = list(header or ())
        inside = None
        if rule.guard is not None and score is not None:
            inside = bool(score <= rule.guard.threshold)
            if not inside:
                flags.append(GUARD_MESSAGE)
        images.append(ImageDecision(
            str(name), p, p >= rule.threshold, level_of(p, rule.points) if rule.points else None,
            None if score is None else float(score), inside, tuple(flags), include_flagged or not flags, err))
    used = [i.probability for i in images if i.used]
    prob = study_probability(used)
    notes = []
    left_out = [i for i in images if i.flags and not i.used]
    if left_out:
        notes.append(f"{len(left_out)} of {n} image(s) flagged ({'; '.join(sorted({f for i in left_out for f in i.flags}))}) "
                     "and left out of the study probability")
    elif any(i.flags for i in images):
        notes.append("flagged image(s) were counted in the study probability at the user's request")
    if prob is None and any(i.probability is not None for i in images):
        notes.append("every readable image was flagged: no study result (include flagged images to see one)")
    notes += rule.missing_notes()
    return StudyDecision(
        tuple(images), prob, None if prob is None else prob >= rule.threshold,
        level_of(prob, rule.points) if prob is not None and rule.points else None,
        rule.threshold, rule.missing, tuple(notes), rule.calibration is not None)
