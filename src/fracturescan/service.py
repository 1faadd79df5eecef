"""What the web app and the REST API share: model discovery, the active model and threshold,
analysis of uploaded files, heatmap overlays.

Neither Streamlit nor FastAPI is imported here, and no ML lives here: probabilities come from
:class:`~fracturescan.inference.Predictor` and heatmaps from :mod:`fracturescan.explain`,
through the one adapter :func:`explain_one`. The front ends talk to this module's typed
interface: a :class:`ModelChoice` (a discovered :class:`~fracturescan.checkpoint.Checkpoint`),
a :class:`Predictor`, the store's SQLAlchemy ``Engine`` and the asking user's ``UserInfo``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from fracturescan.checkpoint import Checkpoint
from fracturescan.data.images import read_image, sniff_format
from fracturescan.decision import StudyDecision, decide_study
from fracturescan.errors import FracturescanError, ImageReadError
from fracturescan.explain import METHOD_LABELS, caption_lines, explain_image, overlay
from fracturescan.explain.overlay import captioned_figure
from fracturescan.inference import Predictor
from fracturescan.models.checkpoint import verify_file
from fracturescan.models.metadata import CheckpointMetadata
from fracturescan.notices import INTENDED_USE, heatmap_caption  # noqa: F401  (re-exported for the front ends)

if TYPE_CHECKING:  # the store is an optional extra (SQLAlchemy); only its types are named here
    from sqlalchemy import Engine

    from fracturescan.store.users import UserInfo

log = logging.getLogger(__name__)

#: Longest side of images sent to the browser; larger radiographs are downscaled for display.
DISPLAY_MAX_SIDE = 768

#: Pointing-game score below which the app warns that a model's heatmaps miss known fractures.
LOCALISATION_BAR = 0.6


@dataclass(frozen=True)
class LocalisationCheck:
    """A model's pointing-game result (``fracturescan explain MODEL --evaluate PHANTOMS``)."""

    score: float | None  # fraction of phantom true positives whose heatmap peak hit the box
    n_true_positive: int
    split: str
    file: Path

    @property
    def reliable(self) -> bool:
        """True when the score reaches :data:`LOCALISATION_BAR`."""
        return self.score is not None and self.score >= LOCALISATION_BAR


@functools.lru_cache(maxsize=256)
def _read_pointing(file: Path, mtime_ns: int, size: int) -> tuple[str | None, LocalisationCheck]:
    """(model SHA-256, result) of one pointing-game file; cached until the file changes
    (the app asks on every rerun)."""
    data = json.loads(file.read_text(encoding="utf-8"))
    score = None if data["score"] is None else float(data["score"])
    return data.get("model_sha256"), LocalisationCheck(score, int(data["n_true_positive"]),
                                                       str(data["split"]), file)


@dataclass(frozen=True)
class ModelChoice:
    """A checkpoint the admin can activate."""

    model_id: str
    checkpoint: Checkpoint

    @property
    def path(self) -> Path:
        """The checkpoint directory."""
        return self.checkpoint.directory

    @property
    def metadata(self) -> CheckpointMetadata:
        """The checkpoint's metadata (read once, at discovery)."""
        return self.checkpoint.metadata

    @property
    def version(self) -> str:
        """Version string recorded in the audit trail: weights hash and creation time."""
        return f"sha256:{self.metadata.sha256[:12]} ({self.metadata.created_at or 'unknown date'})"

    def localisation(self) -> LocalisationCheck | None:
        """The newest pointing-game result written for THIS checkpoint's weights, if any.

        ``explain --evaluate`` writes ``pointing_<split>.json`` into the folder it was given: the
        checkpoint itself or, for ``run/best``, the run directory. Files for other weights (the
        run was retrained since) and unreadable files are ignored.
        """
        folders = [self.path] + ([self.checkpoint.run_directory] if self.path.name == "best" else [])
        found = []
        for file in (f for folder in folders for f in folder.glob("pointing_*.json")):
            try:
                stat = file.stat()
                model_sha256, check = _read_pointing(file, stat.st_mtime_ns, stat.st_size)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("Ignoring unreadable pointing-game file %s: %s", file, exc)
                continue
            if model_sha256 == self.metadata.sha256:
                found.append((stat.st_mtime_ns, check))
        return max(found, key=lambda item: item[0])[1] if found else None

    def model_card(self) -> str:
        """The checkpoint's MODEL_CARD.md text ('' if missing)."""
        return self.checkpoint.model_card()

    @property
    def problem(self) -> str | None:
        """Why this checkpoint's weights cannot be used (missing, or not the SHA-256 recorded in
        its metadata), or None when they verify. Hashed once per file state, then cached. An
        ensemble's members are each checked."""
        try:
            files = self.checkpoint.weight_files()
        except FracturescanError as exc:
            return str(exc)
        for weights, expected in files:
            try:
                stat = weights.stat()
            except OSError as exc:
                return f"{weights} cannot be read ({exc.strerror or exc})"
            problem = _weights_problem(weights, stat.st_mtime_ns, stat.st_size, expected)
            if problem:
                return problem
        return None


@functools.lru_cache(maxsize=256)
def _weights_problem(weights: Path, mtime_ns: int, size: int, expected: str) -> str | None:
    """The verification error of one weights file (None: it matches); logged once per file state."""
    try:
        verify_file(weights, expected, "SHA-256", "Re-copy or re-train the checkpoint.")
    except FracturescanError as exc:
        log.warning("model %s cannot be used and is skipped unless an admin chose it: %s", weights.parent, exc)
        return str(exc)
    return None


def discover_models(models_dir: Path | None, extra: Sequence[Path] = ()) -> list[ModelChoice]:
    """Checkpoints among the run directories in ``models_dir`` plus the ``extra`` paths.

    Folders that are not checkpoints are skipped with a warning, so one broken run does not
    take the app down; checkpoints whose weights fail verification are listed with their
    :attr:`ModelChoice.problem` (and a warning in the log) and never made active by default.
    Read-only: nothing in the folders is renamed or written.
    """
    candidates: list[Path] = []
    if models_dir is not None and models_dir.is_dir():
        candidates += [models_dir] + sorted(p for p in models_dir.iterdir() if p.is_dir())
    candidates += list(extra)
    found: dict[str, ModelChoice] = {}
    seen: set[Path] = set()
    for candidate in candidates:
        try:
            opened = Checkpoint.open(candidate, repair=False)  # a look never renames folders
        except FracturescanError as exc:
            if candidate != models_dir:
                log.warning("skipping %s: %s", candidate, exc)
            continue
        path = opened.directory.resolve()
        if path in seen:
            continue
        seen.add(path)
        checkpoint = Checkpoint(path, opened.metadata)
        name = checkpoint.name
        model_id = name if name not in found else f"{candidate.parent.name}/{name}"
        found[model_id] = ModelChoice(model_id, checkpoint)
    for choice in found.values():
        _ = choice.problem  # verified (and, if broken, logged) once per weights file
    return list(found.values())


def active_model(engine: "Engine", models: list[ModelChoice]) -> ModelChoice | None:
    """The admin's chosen model, or the first usable one found when none was chosen (or it
    vanished). A chosen model whose weights fail verification is still returned: the server
    then answers 503 rather than silently serving another model; an unchosen broken run is
    only skipped (:attr:`ModelChoice.problem`)."""
    from fracturescan.store import settings

    wanted = settings.get_setting(engine, settings.ACTIVE_MODEL)
    for choice in models:
        if choice.model_id == wanted:
            return choice
    return first_usable(models)


def first_usable(models: Sequence[ModelChoice]) -> ModelChoice | None:
    """The first model whose weights verify (None if none does)."""
    return next((choice for choice in models if choice.problem is None), None)


def active_threshold(engine: "Engine", choice: ModelChoice) -> float:
    """The admin's threshold for this model, else the one stored in its checkpoint."""
    from fracturescan.store import settings

    stored = settings.get_setting(engine, settings.threshold_key(choice.metadata.sha256))
    return float(stored) if stored is not None else float(choice.metadata.threshold)


@dataclass
class AnalysedImage:
    """One upload after analysis; ``error`` holds the reader's message when it failed."""

    name: str
    sha256: str
    file_type: str
    probability: float | None = None
    display: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    heatmap_method: str | None = None  # "grad-cam" or "reference-ig"
    dicom_info: dict[str, Any] | None = None
    error: str | None = None
    logit: float | None = None  # the model's raw score; ``probability`` is its calibrated value
    guard_score: float | None = None
    abnormal: bool | None = None  # single-threshold decision
    level: str | None = None  # abnormal / doubt / normal (None without operating points)
    flags: tuple[str, ...] = ()  # why the image is not trusted (DICOM header, input guard)
    used: bool = False  # counted in the study probability


@dataclass
class Analysis:
    """A study analysed with one model at one threshold."""

    images: list[AnalysedImage]
    threshold: float
    seconds: float
    audit_id: int | None = None
    heatmaps_available: bool = True
    notes: list[str] = field(default_factory=list)
    #: The decision rule's answer (:func:`fracturescan.decision.decide_study`); every front end shows it.
    decision: StudyDecision | None = None

    @property
    def readable(self) -> list[AnalysedImage]:
        """Images that were read and scored."""
        return [i for i in self.images if i.probability is not None]

    @property
    def study_probability(self) -> float | None:
        """The decision's study probability: mean calibrated probability of the used images."""
        return None if self.decision is None else self.decision.probability

    @property
    def level(self) -> str | None:
        """abnormal / doubt / normal, or None (no operating points, or no image used)."""
        return None if self.decision is None else self.decision.level


#: The one thread of this process that loads and runs models (see :func:`on_model_thread`).
_MODEL_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fracturescan-model")
T = TypeVar("T")


def on_model_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the process's single model thread; waits for the result.

    The web app and the API load and run every model here, whichever request or Streamlit
    session asks. It serialises analyses (heatmap hooks sit on the shared model), and torch on a
    CPU is much slower once its thread pools have been started from several threads: measured
    on the 2-core dev machine, DenseNet121 at 224 px took 66-68 ms per image when loading and
    inference shared one worker thread, 98-108 ms when the model was loaded on one thread and
    used on another. A call made on the model thread itself runs directly (no deadlock).
    """
    if threading.current_thread().name.startswith("fracturescan-model"):
        return fn(*args, **kwargs)
    return _MODEL_THREAD.submit(fn, *args, **kwargs).result()


def explain_one(predictor: Predictor, image: np.ndarray,
                heatmap: bool = True) -> tuple[float, np.ndarray | None, str | None]:
    """THE adapter to the explain API: (probability, heatmap in [0,1] at image size or None,
    the heatmap's method or None). ``heatmap=False`` only scores the image (faster)."""
    if not heatmap:
        pixels = predictor.preprocess(image)
        return float(predictor.probabilities(pixels[None])[0]), None, None
    explanation = explain_image(predictor, image)
    return (float(explanation.probability), np.asarray(explanation.heatmap, dtype=np.float32),
            explanation.method)


def score_one(predictor: Predictor, image: np.ndarray,
              heatmap: bool = True) -> tuple[float, float | None, np.ndarray | None, str | None]:
    """(raw logit, input-guard score or None, heatmap or None, heatmap method or None) for one
    decoded image; the decision rule turns the logit into what is shown (:func:`decide`)."""
    logits, scores = predictor.assess(predictor.preprocess(image)[None])
    _, heatmap_array, method = explain_one(predictor, image, True) if heatmap else (None, None, None)
    return float(logits[0]), None if scores is None else float(scores[0]), heatmap_array, method


def make_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """uint8 RGB overlay of ``heatmap`` on ``image`` at opacity ``alpha`` (explain's colours)."""
    return np.asarray(overlay(image, heatmap, alpha))


def _downscale(array: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Shrink a float (H, W) array so its longer side is at most ``max_side``."""
    h, w = array.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return array.astype(np.float32, copy=False)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def to_png(image: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a float [0,1] image (decoded pixels only, no file metadata)."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _dicom_info(data: bytes) -> dict[str, Any] | None:
    """Non-identifying DICOM fields (never names, IDs, dates); None if they cannot be read."""
    from fracturescan.data.dicom_dataset import dicom_metadata_safe, load_dataset

    try:
        return dicom_metadata_safe(load_dataset(data, pixels=False, force=True))
    except FracturescanError:
        return None


def check_upload_size(name: str, size: int, max_bytes: int | None) -> None:
    """Raise :class:`ImageReadError` when an upload of ``size`` bytes exceeds ``max_bytes``."""
    if max_bytes is not None and size > max_bytes:
        raise ImageReadError(
            f"{name} is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:g} MB limit per file; "
            "upload a smaller export (e.g. one image per file, or a compressed DICOM) or ask an "
            "administrator to raise the limit."
        )


#: Uploads decoded at once across the process: each may take ~12 bytes per pixel for a moment.
_DECODE_SLOTS = threading.BoundedSemaphore(2)


def analyse_uploads(predictor: Predictor, uploads: Sequence[tuple[str, bytes]], threshold: float,
                    keep_pixels: bool = False, max_bytes: int | None = None,
                    heatmaps: bool = True, include_flagged: bool = False) -> tuple[Analysis, dict[str, bytes]]:
    """Read, score and (unless ``heatmaps`` is False) explain each upload; unreadable files get
    the reader's message. Call it from any thread: files are decoded there, and scored on the
    model thread (:func:`on_model_thread`).

    Files larger than ``max_bytes`` are refused before anything else looks at them. A DICOM
    header that says the image is not a radiograph of the model's body parts is flagged before
    the model runs; the input guard flags images unlike the training data. The checkpoint's
    decision rule at ``threshold`` then decides (:func:`fracturescan.decision.decide_study`);
    flagged images are left out of the study unless ``include_flagged``.
    Returns the analysis and, when ``keep_pixels``, {sha256: PNG of the decoded pixels}.
    """
    from fracturescan.guard import header_flags

    start = time.perf_counter()
    images, stored = [], {}
    for name, data in uploads:
        try:
            check_upload_size(name, len(data), max_bytes)
        except ImageReadError as exc:
            # No hash, no sniffing, no decoding: an oversized file costs nothing more.
            images.append(AnalysedImage(name=name, sha256="", file_type="too large", error=str(exc)))
            log.info("upload refused: %d bytes over the %d-byte limit", len(data), max_bytes)
            continue
        digest = hashlib.sha256(data).hexdigest()
        kind = sniff_format(data) or ("dicom" if name.lower().endswith((".dcm", ".dicom")) else "unknown")
        item = AnalysedImage(name=name, sha256=digest, file_type=kind)
        images.append(item)
        if kind == "dicom":
            item.dicom_info = _dicom_info(data)
            item.flags = tuple(header_flags(item.dicom_info, predictor.metadata.body_parts))
        try:
            # Decoding runs on the caller's thread, a few at a time: only scoring waits for the
            # single model thread, so one slow file does not hold up every other request.
            with _DECODE_SLOTS:
                image = read_image(data, name=name)
            item.logit, item.guard_score, heatmap, item.heatmap_method = on_model_thread(
                score_one, predictor, image, heatmaps)
        except FracturescanError as exc:
            item.error = str(exc)
            log.info("upload %s… could not be analysed: %s", digest[:12], type(exc).__name__)
            continue
        item.display = _downscale(image)
        item.heatmap = None if heatmap is None else np.clip(_downscale(heatmap), 0, 1)
        if keep_pixels:
            stored[digest] = to_png(image)
    decision = decide(predictor, images, threshold, include_flagged)
    analysis = Analysis(images, threshold, time.perf_counter() - start, heatmaps_available=heatmaps,
                        decision=decision)
    log.info("analysed %d upload(s) in %.2f s", len(images), analysis.seconds)
    return analysis, stored


def decide(predictor: Predictor, images: list[AnalysedImage], threshold: float,
           include_flagged: bool = False) -> StudyDecision:
    """Apply the checkpoint's decision rule at ``threshold`` to analysed images and copy each
    image's answer (calibrated probability, decision, level, flags) onto it."""
    rule = dataclasses.replace(predictor.rule, threshold=float(threshold))
    decision = decide_study(rule, [i.logit for i in images], names=[i.name for i in images],
                            guard_scores=[i.guard_score for i in images], header_flags=[i.flags for i in images],
                            errors=[i.error for i in images], include_flagged=include_flagged)
    for item, answer in zip(images, decision.images):
        item.probability, item.abnormal, item.level = answer.probability, answer.abnormal, answer.level
        item.flags, item.used = answer.flags, answer.used
    return decision


def analyse_and_record(engine: "Engine", user: "UserInfo", choice: ModelChoice, predictor: Predictor, threshold: float,
                       uploads: Sequence[tuple[str, bytes]], *, store_pixels: bool = False,
                       max_bytes: int | None = None, heatmaps: bool = True,
                       include_flagged: bool = False) -> Analysis:
    """:func:`analyse_uploads`, then one audit record for the readable images (its id lands in
    ``analysis.audit_id``; none is written when no file could be read). ``user`` is the
    :class:`~fracturescan.store.users.UserInfo` of whoever asked (web login or API key)."""
    from fracturescan.store.audit import ImageRecord, ModelRecord, record_analysis

    analysis, pixels = analyse_uploads(predictor, uploads, threshold, keep_pixels=store_pixels,
                                       max_bytes=max_bytes, heatmaps=heatmaps, include_flagged=include_flagged)
    records = [ImageRecord(i.sha256, i.file_type, i.probability, i.dicom_info, pixels.get(i.sha256), i.flags)
               for i in analysis.readable]
    if records:
        model = ModelRecord(choice.model_id, choice.version, choice.metadata.sha256, choice.metadata.synthetic)
        analysis.audit_id = record_analysis(engine, user, model, threshold, records,
                                            shown_probability=analysis.study_probability)
    return analysis


def overlay_png(item: AnalysedImage, threshold: float, synthetic: bool, alpha: float = 0.4) -> bytes | None:
    """The heatmap over the image as a PNG captioned like ``fracturescan explain`` figures
    (probability and decision, the method with "explanation aid, not a diagnosis", and the
    synthetic-model note), so the picture stays labelled wherever a client shows it.
    None without a heatmap."""
    if item.heatmap is None or item.display is None or item.probability is None:
        return None
    lines = caption_lines(item.probability, threshold, synthetic, METHOD_LABELS.get(item.heatmap_method or "", "Heatmap"))
    buffer = io.BytesIO()
    # Level 3 instead of PNG's default 6: half the encoding time for about a fifth more bytes.
    captioned_figure(item.display, item.heatmap, lines, alpha).save(buffer, "PNG", compress_level=3)
    return buffer.getvalue()
