"""The result of one study as a DICOM Structured Report following TID 1500 (Measurement Report).

Content (highdicom builds the template; see PS3.16 TID 1500/1501):

* one measurement group for the study: the finding (abnormal / normal / indeterminate), the
  study probability and the decision threshold as numeric measurements, the algorithm (model id,
  version, weights SHA-256), every source image, and the notices ("explanation aid, not a
  diagnosis"; the synthetic-model warning when it applies) as text;
* one group per analysed image: its probability and finding, referencing that image;
* one group per refused image: why it was not analysed, referencing it.

The SR goes into a new series of the source study (same StudyInstanceUID, patient and study
attributes copied from the source by highdicom).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from fracturescan import __version__
from fracturescan.pacs.results import MANUFACTURER, SR_SERIES_NUMBER, StudyResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

#: Private coding scheme for the concepts no standard code names (PS3.16: "99" prefix).
SCHEME = "99FRSCAN"
SERIES_DESCRIPTION = "fracturescan AI result (not a diagnosis)"


def _codes() -> dict[str, Any]:
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    return {
        "probability": Code("PABN", SCHEME, "Probability of abnormality"),
        "threshold": Code("THRESH", SCHEME, "Decision threshold"),
        "no_units": codes.UCUM.NoUnits,
        "finding": codes.DCM.Finding,
        "abnormal": Code("263654008", "SCT", "Abnormal"),
        "normal": Code("17621005", "SCT", "Normal"),
        "indeterminate": Code("82334004", "SCT", "Indeterminate"),
        "comment": Code("121106", "DCM", "Comment"),
        "procedure": Code("363680008", "SCT", "Radiographic imaging procedure"),
        "device": codes.DCM.Device,
    }


def algorithm(result: StudyResult) -> Any:
    """The AlgorithmIdentification of the model that made ``result``."""
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=f"fracturescan {result.model_id}"[:64], version=result.model_version[:64],
        parameters=[f"weights sha256:{result.model_sha256}", f"threshold {result.threshold:.4f}",
                    f"fracturescan {__version__}"])


def _text(name: Any, value: str) -> Any:
    import highdicom as hd

    return hd.sr.TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _group(identifier: str, c: dict[str, Any], result: StudyResult, sources: list[Dataset],
           probability: float | None, level: str | None, texts: list[str],
           extra_measurements: Sequence[Any] = ()) -> Any:
    """One TID 1501 measurement group: the probability (referencing its image when there is one
    image), the finding at ``level``, the algorithm, the source images, and ``texts`` as comments."""
    import highdicom as hd

    measurements = list(extra_measurements)
    if probability is not None:
        refs = [hd.sr.SourceImageForMeasurement.from_source_image(s) for s in sources] if len(sources) == 1 else None
        measurements.insert(0, hd.sr.Measurement(name=c["probability"], value=round(float(probability), 6),
                                                 unit=c["no_units"], referenced_images=refs))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier),
        algorithm_id=algorithm(result),
        measurements=measurements or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(c["finding"], c[level])] if level else None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources])
    # The group is a one-item content sequence; its container holds the items.
    container = group[0]
    for text in texts:
        container.ContentSequence.append(_text(c["comment"], text))
    return group


def build_sr(result: StudyResult, *, series_uid: str | None = None, sop_uid: str | None = None,
             instance_number: int = 1, previous: Dataset | None = None) -> Dataset:
    """The TID 1500 SR of ``result`` (a ``highdicom.sr.Comprehensive3DSR``), in a new series of
    the source study unless ``series_uid`` is given. ``previous``: an earlier SR of the same
    study that this one supersedes (listed in its Predecessor Documents Sequence)."""
    import highdicom as hd

    if not result.sources:
        raise ValueError("a result SR needs at least one source image")
    c = _codes()
    threshold = hd.sr.Measurement(name=c["threshold"], value=round(float(result.threshold), 6), unit=c["no_units"])
    study_texts = list(result.notices)
    if not result.images:
        study_texts.insert(0, "Not analysed: none of the received images could be analysed.")
    groups = [_group("study", c, result, result.sources, result.study_probability, result.level,
                     study_texts, [threshold])]
    for n, image in enumerate(result.images, 1):
        groups.append(_group(f"image {n}", c, result, [image.source], image.probability,
                             "abnormal" if image.probability >= result.threshold else "normal", []))
    for n, refusal in enumerate(result.refusals, 1):
        groups.append(_group(f"refused image {n}", c, result, [refusal.source], None, None,
                             [f"Not analysed: {refusal.reason}"]))
    device = hd.sr.ObserverContext(
        observer_type=c["device"],
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="fracturescan", manufacturer_name=MANUFACTURER,
            model_name=result.model_id[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=c["procedure"], imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=result.sources, content=report, series_instance_uid=series_uid or hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_uid or hd.UID(),
        instance_number=instance_number, manufacturer=MANUFACTURER, is_complete=True,
        previous_versions=[previous] if previous is not None else None,
        series_description=SERIES_DESCRIPTION)
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme() -> Dataset:
    """Declares :data:`SCHEME` in the SOP Common module, as PS3.3 C.12.1.1.4 asks of private schemes."""
    from pydicom.dataset import Dataset as PydicomDataset

    item = PydicomDataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "fracturescan result concepts"
    item.CodingSchemeResponsibleOrganization = "fracturescan project"
    return item
