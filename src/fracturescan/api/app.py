"""The FastAPI application: API-key authentication, model info, prediction, feedback.

Every request is answered with JSON; every error is ``{"error": "<one sentence>"}`` with a
fitting status code, never a traceback. Each prediction is written to the same append-only
audit trail as the web app, under the key owner's name.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at
# definition time, and the dependency aliases (User, Model) are local to create_app.
import base64
import logging
import re
import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fracturescan import __version__
from fracturescan.appconfig import AppConfig
from fracturescan.decision import DecisionRule
from fracturescan.errors import CheckpointError, FracturescanError, ImageReadError, RoutingError
from fracturescan.inference import Predictor
from fracturescan.notices import INTENDED_USE, SYNTHETIC_MODEL, heatmap_caption
from fracturescan.routing import part_assignments, route_study
from fracturescan.service import (LOCALISATION_BAR, AnalysedImage, LocalisationCheck, ModelChoice, active_model,
                                  active_threshold, analyse_and_record, check_upload_size, discover_models,
                                  on_model_thread, overlay_png)
from fracturescan.store import settings
from fracturescan.store.apikeys import authenticate_key
from fracturescan.store.audit import FeedbackNotAllowed, log_event, record_feedback
from fracturescan.store.users import AuthenticationError, UserInfo, open_store

from . import metrics, schemas
from .guard import RequestGuard

log = logging.getLogger(__name__)

#: Files per request: a study has a handful of views; more is a batch, which belongs in a loop.
MAX_FILES = 16
DISCLAIMER = "Research software. " + INTENDED_USE
_AUTH_HINT = ("Send an API key in the header 'Authorization: Bearer fsk_…' "
              "(an administrator creates one with `fracturescan api-key create USER`).")
_BEARER = {"WWW-Authenticate": "Bearer"}


class _Models:
    """The active model and its loaded Predictor; loading and analyses run on the process's
    single model thread (:func:`~fracturescan.service.on_model_thread`, which says why)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._predictors: dict[str, Predictor] = {}

    def all(self) -> list[ModelChoice]:
        """Every model found now (the folder is read again, so new runs appear)."""
        return discover_models(self.config.models_dir, self.config.model_paths)

    def active(self, engine: Engine) -> ModelChoice | None:
        """The admin's active model (the first one found if none was chosen)."""
        return active_model(engine, self.all())

    def predictor(self, choice: ModelChoice) -> Predictor:
        """The loaded Predictor of ``choice`` (kept per weights hash; the last two stay loaded)."""
        return on_model_thread(self._load, choice)

    def _load(self, choice: ModelChoice) -> Predictor:
        key = choice.metadata.sha256
        if key not in self._predictors:
            if len(self._predictors) >= 2:
                self._predictors.pop(next(iter(self._predictors)))
            self._predictors[key] = Predictor(choice.checkpoint)
            log.info("loaded model %s (%s)", choice.model_id, choice.version)
        return self._predictors[key]


_ERROR_MEANINGS = {
    400: "The request body could not be parsed (malformed JSON or multipart).",
    401: "No API key, an unknown or revoked one, or a disabled account.",
    403: "Feedback on an analysis requested by another user (only its own user or an admin may).",
    404: "No analysis with that audit id.",
    413: "Too many files, or a request larger than the files allowed may total.",
    422: "Invalid request, none of the files could be read (each file's reason is named), or the study "
         "cannot be routed (mixed body parts, a part no model covers, a DICOM part contradicting body_part).",
    500: "Unexpected error: the message gives a reference to the server log, no details.",
    503: "No model is available, the active model could not be loaded, or the database is unavailable "
         "(retry in a moment).",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for these error codes: all share the ``{"error": ...}`` body."""
    return {code: {"model": schemas.ErrorBody, "description": _ERROR_MEANINGS[code]} for code in codes}


def _warnings(choice: ModelChoice, check: LocalisationCheck | None) -> list[str]:
    """What a client must show with any result: synthetic model, heatmaps that miss fractures."""
    notes = [SYNTHETIC_MODEL] if choice.metadata.synthetic else []
    if check is not None and not check.reliable:
        notes.append(f"Heatmaps from this model did not reliably point at known fractures (pointing game "
                     f"{'n/a' if check.score is None else f'{check.score:.0%}'}, bar {LOCALISATION_BAR:.0%}).")
    return notes


def _model_info(choice: ModelChoice, threshold: float) -> schemas.ModelInfo:
    meta = choice.metadata
    check = choice.localisation()
    localisation = None if check is None else schemas.Localisation(
        score=check.score, n_true_positive=check.n_true_positive, split=check.split,
        reliable=check.reliable, bar=LOCALISATION_BAR)
    return schemas.ModelInfo(
        model_id=choice.model_id, version=choice.version, sha256=meta.sha256, architecture=meta.arch,
        input_size=meta.input_size, threshold=threshold, synthetic=meta.synthetic,
        body_parts=list(meta.body_parts), heatmap_method="reference-ig" if meta.reference_sha256 else "grad-cam",
        localisation=localisation, intended_use=INTENDED_USE, warnings=_warnings(choice, check),
        **_rule_info(meta))


def _rule_info(meta: object) -> dict[str, object]:
    """What the checkpoint's decision rule holds, for ``/v1/model``."""
    rule = DecisionRule.from_metadata(meta)
    points = None if rule.points is None else schemas.OperatingPoints(
        low=rule.points.low, high=rule.points.high, target_sensitivity=rule.points.target_sensitivity,
        target_specificity=rule.points.target_specificity, fitted_on=rule.points.fitted_on)
    return {"calibrated": rule.calibration is not None, "operating_points": points,
            "input_guard": rule.guard is not None, "missing": list(rule.missing)}


def _image_result(item: AnalysedImage, threshold: float, heatmaps: bool, synthetic: bool) -> schemas.ImageResult:
    result = schemas.ImageResult(name=item.name, sha256=item.sha256, file_type=item.file_type,
                                 error=item.error, dicom=item.dicom_info, flags=list(item.flags))
    if item.probability is not None:
        result.probability, result.abnormal = item.probability, item.abnormal
        result.level, result.used_in_study = item.level, item.used
        png = overlay_png(item, threshold, synthetic) if heatmaps else None
        if png is not None:
            result.heatmap_png = base64.b64encode(png).decode("ascii")
            result.heatmap_method = item.heatmap_method
    return result


def _dicom_objects(analysis: Any, uploads: list[tuple[str, bytes]],
                   choice: ModelChoice) -> tuple[list[schemas.DicomObject], str | None]:
    """The analysis as DICOM files (base64), or why there are none."""
    try:
        from fracturescan.pacs.files import file_name, to_bytes
        from fracturescan.pacs.uploads import dicom_results
    except ImportError:
        return [], "No DICOM results: the server lacks the pacs extra (pip install 'fracturescan[pacs]')."
    datasets, note = dicom_results(analysis, uploads, choice)
    return [schemas.DicomObject(file_name=file_name(ds), modality=str(ds.Modality),
                                sop_instance_uid=str(ds.SOPInstanceUID),
                                dicom_base64=base64.b64encode(to_bytes(ds)).decode("ascii"))
            for ds in datasets], note


def _read_uploads(files: list[UploadFile],
                  max_bytes: int) -> tuple[list[tuple[str, bytes]], dict[int, schemas.ImageResult]]:
    """(name, bytes) of each file within the limit, and {position: its error result} for those
    over it.

    At most ``max_bytes + 1`` bytes of a file are read, so an oversized file costs no memory.
    """
    uploads, refused = [], {}
    for position, upload in enumerate(files):
        name = (upload.filename or f"file{position + 1}")[:255]
        data = upload.file.read(max_bytes + 1)
        try:
            check_upload_size(name, max(upload.size or 0, len(data)), max_bytes)
        except ImageReadError as exc:
            refused[position] = schemas.ImageResult(name=name, sha256="", file_type="too large", error=str(exc))
            continue
        uploads.append((name, data))
    return uploads, refused


def _key_user(engine: Any, authorization: str | None) -> UserInfo:
    """The owner of the bearer key in an Authorization header; AuthenticationError otherwise."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("No API key.")
    return authenticate_key(engine, key.strip())


def _refusal(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """What the guard answers when a key check fails: 401, or 500 when the check itself broke."""
    if isinstance(exc, AuthenticationError):
        log.info("API request refused: %s", exc)
        return 401, f"{exc} {_AUTH_HINT}", _BEARER
    reference = uuid.uuid4().hex[:12]
    log.error("API key check failed (reference %s)", reference, exc_info=exc)
    return 500, f"Internal error (reference {reference}); it was logged on the server.", {}


_FEEDBACK_PATH = re.compile(r"/v1/studies/[^/]+/feedback")


def _needs_key(path: str) -> bool:
    """Routes that act as a user; /v1/health, the docs and unknown paths need no key."""
    return path in ("/v1/model", "/v1/predict") or _FEEDBACK_PATH.fullmatch(path) is not None


def _logged_error(status: int, answer: str, logged: str, *args: object,
                  exc_info: BaseException | None = None) -> JSONResponse:
    """An error answer that gives the client a reference and the server log the details under it
    (the library's messages name files and folders on the server; the client never sees them).
    ``answer`` has a ``{reference}`` field; ``logged`` takes the reference as its first ``%s``."""
    reference = uuid.uuid4().hex[:12]
    log.error(logged, reference, *args, exc_info=exc_info)
    return JSONResponse({"error": answer.format(reference=reference)}, status_code=status)


def create_app(config: AppConfig, preload: bool = False) -> FastAPI:
    """The API over ``config``'s database and models (the web app's, when they share a config).

    ``preload`` loads the active model now, so the first request does not wait for it. A run
    whose weights fail verification is skipped (logged, listed by /v1/health); only a model an
    admin chose that fails leaves predictions answering 503, and the server still starts.
    """
    engine = open_store(config.db_url)
    models = _Models(config)
    if preload and (choice := models.active(engine)) is not None:
        try:
            models.predictor(choice)
        except CheckpointError as exc:  # only an admin's explicit choice gets here: serve 503s, keep running
            log.error("the active model %s could not be loaded; predictions answer 503 until an admin "
                      "chooses another: %s", choice.model_id, exc)
    app = FastAPI(title="fracturescan API", version=__version__,
                  description="Abnormality detection in musculoskeletal radiographs. " + DISCLAIMER)
    app.state.models = models  # benchmarks time the library on the server's own model thread
    bearer = HTTPBearer(auto_error=False)

    def current_user(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> UserInfo:
        # The guard checked the key before the body was read (``bearer`` documents the scheme).
        user = getattr(request.state, "api_user", None)
        if user is None:  # a route the guard does not know needs a key: check it here
            try:
                return _key_user(engine, request.headers.get("authorization"))
            except AuthenticationError as exc:
                raise HTTPException(*_refusal(exc)) from None
        return user

    def require_model() -> ModelChoice:
        choice = models.active(engine)
        if choice is None:
            raise HTTPException(503, "No model is available: start the server with --models DIR or --model PATH "
                                     "pointing at a trained run.")
        return choice

    User = Annotated[UserInfo, Depends(current_user)]
    BodyPart = Annotated[str | None, Query(description="MURA body part (XR_WRIST, wrist, ...): route to its active "
                                                       "model. Default: the DICOM BodyPartExamined, else the "
                                                       "default model.", max_length=40)]
    Credentials = Annotated[HTTPAuthorizationCredentials, Depends(bearer)]  # the same, cached per request
    Model = Annotated[ModelChoice, Depends(require_model)]

    @app.get("/v1/health", response_model=schemas.Health, responses=_errors(500, 503))
    def health() -> schemas.Health:
        """Liveness, and whether a model is there to serve (no key needed)."""
        found = models.all()
        choice = active_model(engine, found)
        status = "no-model" if choice is None else "ok" if choice.problem is None else "model-unusable"
        return schemas.Health(status=status, model_id=choice.model_id if choice else None, version=__version__,
                              unusable_models=[m.model_id for m in found if m.problem is not None])

    @app.get("/v1/model", response_model=schemas.ModelInfo, responses=_errors(401, 422, 500, 503))
    def model_info(user: User, choice: Model, body_part: BodyPart = None) -> schemas.ModelInfo:
        """The model that answers predictions now (for ``body_part``, if given), its threshold, and
        what to know about it."""
        if body_part:
            choice = route_study(engine, models.all(), [], body_part).choice
        return _model_info(choice, active_threshold(engine, choice))

    @app.get("/v1/body-parts", response_model=schemas.BodyPartRouting, responses=_errors(401, 500))
    def body_parts(user: User) -> schemas.BodyPartRouting:
        """Which model each of MURA's seven body parts goes to now (null: no model covers it)."""
        found = models.all()
        return schemas.BodyPartRouting(parts=[
            schemas.BodyPartModel(body_part=part, model_id=choice.model_id if choice else None)
            for part, choice in part_assignments(engine, found).items()])

    @app.post("/v1/predict", response_model=schemas.Prediction, responses=_errors(400, 401, 413, 422, 500, 503))
    def predict(user: User, choice: Model, credentials: Credentials,
                files: Annotated[list[UploadFile], File(min_length=1, description="The views of one study: PNG, JPEG or DICOM.")],
                heatmaps: Annotated[bool, Query(description="Add a heatmap overlay (base64 PNG) per image.")] = False,
                body_part: BodyPart = None,
                dicom: Annotated[bool, Query(description="Add the results as DICOM files for PACS (a TID 1500 SR "
                                                         "and a heatmap Secondary Capture per image, in the "
                                                         "source study); needs DICOM files of one study.")] = False,
                include_flagged: Annotated[bool, Query(description="Count images flagged as unlike the training "
                                                       "data (or by their DICOM header) in the study anyway.")] = False,
                ) -> schemas.Prediction:
        """Score one study with the model for its body part (``body_part``, else the DICOM
        BodyPartExamined, else the default model): each image, and the study as the mean of its
        images (MURA's rule)."""
        if len(files) > MAX_FILES:
            raise HTTPException(413, f"{len(files)} files in one request; send at most {MAX_FILES} "
                                     "(the views of one study) per request.")
        uploads, refused = _read_uploads(files, config.max_upload_bytes)
        route = route_study(engine, models.all(), uploads, body_part)
        choice = route.choice
        threshold = active_threshold(engine, choice)
        predictor = models.predictor(choice)
        analysis = analyse_and_record(  # decodes here, scores on the model thread
            engine, user, choice, predictor, threshold, uploads, heatmaps=heatmaps or dicom,
            store_pixels=bool(settings.get_setting(engine, settings.STORE_PIXELS, False)),
            max_bytes=config.max_upload_bytes, include_flagged=include_flagged)
        scored = iter(analysis.images)
        images = [refused[i] if i in refused else _image_result(next(scored), threshold, heatmaps,
                                                                choice.metadata.synthetic)
                  for i in range(len(files))]
        decision = analysis.decision
        if not analysis.readable:
            reasons = "; ".join(f"{image.name}: {image.error}" for image in images)
            raise HTTPException(422, f"None of the {len(images)} file(s) could be analysed. {reasons}")
        log.info("API prediction #%s by %s: %d image(s) in %.2f s", analysis.audit_id, user.username,
                 len(analysis.readable), analysis.seconds)
        # Which key made it (the audit row holds the user only): its stored prefix, never the key.
        log_event(engine, user.username, "api_prediction",
                  f"audit #{analysis.audit_id} with API key {credentials.credentials[:12]}…")
        methods = {image.heatmap_method for image in images if image.heatmap_method}
        dicom_objects, dicom_note = _dicom_objects(analysis, uploads, choice) if dicom else ([], None)
        return schemas.Prediction(
            audit_id=analysis.audit_id, model_id=choice.model_id, model_version=choice.version,
            model_sha256=choice.metadata.sha256, synthetic=choice.metadata.synthetic, threshold=threshold,
            study=schemas.StudyResult(probability=decision.probability, abnormal=decision.abnormal,
                                      level=decision.level, n_images=sum(i.used for i in analysis.readable),
                                      notes=list(decision.notes)),
            images=images, heatmap_caption=heatmap_caption(methods.pop()) if methods else None,
            seconds=analysis.seconds, disclaimer=DISCLAIMER, body_part=route.body_part,
            body_part_source=route.source,
            warnings=_warnings(choice, choice.localisation()) + list(route.notes) + ([dicom_note] if dicom_note else []),
            dicom_objects=dicom_objects if dicom else None)

    @app.post("/v1/studies/{audit_id}/feedback", response_model=schemas.FeedbackOut, status_code=201,
              responses=_errors(400, 401, 403, 404, 422, 500, 503))
    def feedback(audit_id: Annotated[int, PathParam(ge=1, le=2**63 - 1, description="From a prediction.")],
                 body: schemas.FeedbackIn, user: User) -> schemas.FeedbackOut:
        """Record whether the reader agrees with an analysis's study decision (append-only)."""
        try:
            feedback_id = record_feedback(engine, user, audit_id, body.agrees, body.note)
        except FeedbackNotAllowed as exc:
            raise HTTPException(403, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(404, f"{exc}; use the audit_id a prediction returned.") from None
        return schemas.FeedbackOut(feedback_id=feedback_id, audit_id=audit_id)

    limit = MAX_FILES * config.max_upload_bytes + 1_000_000  # + room for the multipart framing

    def too_large(length: int | None) -> str:
        size = f"{length / 1e6:.0f} MB, more than" if length is not None else "larger than"
        return (f"The request is {size} the {limit / 1e6:.0f} MB one request may carry; send fewer or "
                "smaller files.")

    app.add_middleware(RequestGuard, needs_key=_needs_key, authenticate=lambda header: _key_user(engine, header),
                       refusal=_refusal, max_body=limit, too_large=too_large)

    metrics.install(app, engine, lambda: models.active(engine), current_user)  # GET /metrics, admins' keys
    _install_error_handlers(app)
    return app


def app_from_env() -> FastAPI:
    """The API configured by ``FRACTURESCAN_*`` variables: what each worker process of
    ``fracturescan serve --workers N`` runs."""
    return create_app(AppConfig.from_env(), preload=True)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error becomes ``{"error": "..."}``; unexpected ones are logged with a reference."""

    # Starlette's class, not FastAPI's subclass: body-parsing failures (400), unknown paths (404)
    # and wrong methods (405) are raised as Starlette's and must get the same error shape.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                             for e in exc.errors())
        return JSONResponse({"error": f"Invalid request: {problems}."}, status_code=422)

    # The library's messages name files and folders on the server: they go to the log, and the
    # client gets a reference to find them there.
    @app.exception_handler(CheckpointError)
    async def broken_model(request: Request, exc: CheckpointError) -> JSONResponse:
        return _logged_error(503, "The active model could not be loaded (reference {reference}); an administrator "
                                  "finds the reason in the server log.",
                             "the active model could not be loaded (reference %s): %s", exc)

    @app.exception_handler(RoutingError)
    async def unroutable(request: Request, exc: RoutingError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    # A database that is down or restarting is a 503 to retry, not an unexpected 500 (which
    # also makes the server drop the client's connection).
    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        return _logged_error(503, "The database is unavailable right now (reference {reference}); "
                                  "retry in a moment.",
                             "database unavailable (reference %s) on %s: %s", request.url.path,
                             str(exc.orig).splitlines()[0] if exc.orig else exc)

    @app.exception_handler(FracturescanError)
    async def library_error(request: Request, exc: FracturescanError) -> JSONResponse:
        return _logged_error(500, "The request failed (reference {reference}); it was logged on the server.",
                             "request failed (reference %s): %s", exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _logged_error(500, "Internal error (reference {reference}); it was logged on the server.",
                             "unexpected error (reference %s) on %s", request.url.path, exc_info=exc)
