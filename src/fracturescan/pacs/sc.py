"""The captioned heatmap of one analysed image as a DICOM Secondary Capture, so any PACS viewer
shows it, SR support or not.

The picture is exactly the one ``fracturescan explain`` writes and the API returns (heatmap
over the image above a caption with probability, decision, "explanation aid, not a diagnosis"
and the synthetic-model note), burned in as RGB pixels; the object says so
(BurnedInAnnotation YES) and references its source image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fracturescan.pacs.results import MANUFACTURER, SC_SERIES_NUMBER, ImageResult, StudyResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

SERIES_DESCRIPTION = "fracturescan heatmaps (explanation aid, not a diagnosis)"


def build_sc(result: StudyResult, image: ImageResult, *, series_uid: str, instance_number: int,
             sop_uid: str | None = None) -> Dataset:
    """The Secondary Capture of ``image``'s captioned heatmap in series ``series_uid`` of the
    source study (patient and study attributes copied from the source by highdicom)."""
    import highdicom as hd
    from pydicom.dataset import Dataset as PydicomDataset
    from pydicom.sequence import Sequence

    if image.overlay is None:
        raise ValueError("this image has no heatmap picture")
    source = image.source
    sc = hd.sc.SCImage.from_ref_dataset(
        source, pixel_array=image.overlay, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_uid or hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=("A", "F"), transfer_syntax_uid="1.2.840.10008.1.2.1")
    # highdicom insists on single-letter directions; the picture has the source's orientation
    # (same rows and columns, caption below), so copy the source's value as it is, empty if none.
    sc.PatientOrientation = source.get("PatientOrientation") or ""
    sc.SeriesDescription = SERIES_DESCRIPTION
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "Heatmap overlay and caption drawn by fracturescan"
    sc.ImageComments = " ".join(result.notices)[:10240]
    reference = PydicomDataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = Sequence([reference])
    for keyword in ("BodyPartExamined", "Laterality", "ImageLaterality"):
        if keyword in source and keyword not in sc:
            sc[keyword] = source[keyword]
    return sc
