"""The REST API's JSON shapes (pydantic), so the OpenAPI page at ``/docs`` documents them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    """``GET /v1/health``: is the server up, and is there a model to serve."""

    status: str = Field(description="'ok' when a model is available; 'model-unusable' when the model an "
                                    "admin chose fails verification (predictions answer 503); else 'no-model'.")
    model_id: str | None = None
    version: str = Field(description="fracturescan package version.")
    unusable_models: list[str] = Field(default_factory=list, description=(
        "Models found whose weights fail verification (skipped unless an admin chose one; the "
        "server log says why)."))


class Localisation(BaseModel):
    """The model's pointing-game result on phantoms (``explain --evaluate``), if measured."""

    score: float | None = Field(description="Fraction of detected phantom fractures whose heatmap peak hit the box.")
    n_true_positive: int
    split: str
    reliable: bool = Field(description="True when the score reaches the bar below.")
    bar: float


class OperatingPoints(BaseModel):
    """The two cuts of the three-level answer, on the calibrated study probability."""

    low: float = Field(description="High-sensitivity cut: below it a study is 'normal'.")
    high: float = Field(description="High-specificity cut: at or above it a study is 'abnormal'; between: 'doubt'.")
    target_sensitivity: float
    target_specificity: float
    fitted_on: str


class ModelInfo(BaseModel):
    """``GET /v1/model``: the model that answers ``/v1/predict`` now."""

    model_id: str
    version: str
    sha256: str
    architecture: str
    input_size: int
    threshold: float = Field(description="Decision threshold in use (the admin's, else the checkpoint's).")
    synthetic: bool = Field(description="True when trained on synthetic phantoms: results mean nothing for patients.")
    body_parts: list[str]
    heatmap_method: str = Field(description="'reference-ig' or 'grad-cam'.")
    localisation: Localisation | None = Field(description="null when never measured for these weights.")
    intended_use: str
    warnings: list[str]
    calibrated: bool = Field(False, description="Probabilities are temperature-calibrated (else raw model scores).")
    operating_points: OperatingPoints | None = Field(None, description="null: no abnormal/doubt/normal levels.")
    input_guard: bool = Field(False, description="Images unlike the training data are flagged.")
    missing: list[str] = Field(default_factory=list, description="What this checkpoint lacks: 'calibration', "
                                                                 "'operating points', 'input guard'.")


class ImageResult(BaseModel):
    """One uploaded file. ``error`` is set (and the numbers are null) when it could not be read."""

    name: str
    sha256: str
    file_type: str
    probability: float | None = Field(None, description="Calibrated probability of abnormality.")
    abnormal: bool | None = Field(None, description="probability >= threshold (the single-threshold decision).")
    level: str | None = Field(None, description="'abnormal', 'doubt' or 'normal' (null without operating points).")
    flags: list[str] = Field(default_factory=list, description="Why this result is unreliable (DICOM header "
                             "not a radiograph of the model's body parts; 'not like the training data').")
    used_in_study: bool = Field(False, description="Counted in the study probability (flagged images are not, "
                                                   "unless include_flagged=true).")
    error: str | None = None
    dicom: dict[str, object] | None = Field(None, description="Non-identifying DICOM fields only.")
    heatmap_png: str | None = Field(
        None, description="Base64 PNG: the heatmap over the image, captioned with the probability, the "
                          "decision, the method and 'explanation aid, not a diagnosis' (only with ?heatmaps=true).")
    heatmap_method: str | None = None


class StudyResult(BaseModel):
    """The study: the mean of the used images' calibrated probabilities (the MURA rule)."""

    probability: float | None = Field(description="null when every readable image was flagged.")
    abnormal: bool | None
    level: str | None = Field(None, description="'abnormal', 'doubt' or 'normal' (null without operating points).")
    n_images: int = Field(description="Images counted in the study probability.")
    notes: list[str] = Field(default_factory=list, description="Images left out, and what the checkpoint lacks.")


class DicomObject(BaseModel):
    """One result object for PACS: a Part 10 DICOM file, base64-encoded."""

    file_name: str = Field(description="SR_<SOPInstanceUID>.dcm or SC_<SOPInstanceUID>.dcm")
    modality: str = Field(description="SR (the structured report) or OT (the heatmap secondary capture).")
    sop_instance_uid: str
    dicom_base64: str


class Prediction(BaseModel):
    """``POST /v1/predict``: per-image and study results, with the model that made them."""

    audit_id: int | None = Field(description="The audit record of this analysis (feedback refers to it).")
    model_id: str
    model_version: str
    model_sha256: str
    synthetic: bool
    threshold: float
    study: StudyResult | None = Field(description="null when no file could be read.")
    images: list[ImageResult]
    heatmap_caption: str | None = None
    seconds: float
    disclaimer: str
    body_part: str | None = Field(None, description="The study's MURA body part, null when unknown.")
    body_part_source: str = Field("default", description="How the model was chosen: 'request' (body_part "
                                                         "parameter), 'dicom' (BodyPartExamined) or 'default'.")
    warnings: list[str]
    dicom_objects: list[DicomObject] | None = Field(
        None, description="With ?dicom=true: the SR and heatmap SCs in the source study, to store in PACS "
                          "(empty, with the reason in warnings, when the files are not DICOM of one study).")


class BodyPartModel(BaseModel):
    """One body part and the model its studies go to."""

    body_part: str
    model_id: str | None = Field(description="null: no model covers this body part; its studies are refused.")


class BodyPartRouting(BaseModel):
    """``GET /v1/body-parts``: where each of MURA's seven body parts is routed now."""

    parts: list[BodyPartModel]


class FeedbackIn(BaseModel):
    """``POST /v1/studies/{audit_id}/feedback``: does the reader agree with the study decision."""

    agrees: bool
    note: str = Field("", max_length=4000)


class FeedbackOut(BaseModel):
    """The stored feedback row's id."""

    feedback_id: int
    audit_id: int


class ErrorBody(BaseModel):
    """Every error answer: one sentence saying what is wrong and what to do."""

    error: str
