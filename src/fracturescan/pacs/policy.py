"""What the DICOM node agrees to analyse: projection radiographs (CR, DX) of the musculoskeletal
upper limb, one study at a time of a plausible size. Everything else is refused with a reason
that quotes no patient data (only code strings and UIDs that pass a syntax check)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fracturescan.data.dicom_dataset import no_value_echo, safe_uid, technical_fields, uid_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

#: Modalities of projection radiographs.
MODALITIES = frozenset({"CR", "DX"})
#: CR Image, Digital X-Ray Image for presentation and for processing.
IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",
})
#: BodyPartExamined values (PS3.16 CID 4031 terms) of the upper limb that MURA covers.
UPPER_LIMB = frozenset({"WRIST", "HAND", "FINGER", "THUMB", "ELBOW", "FOREARM", "HUMERUS", "SHOULDER",
                        "ARM", "UPPER EXTREMITY", "UPRLIMB", "EXTREMITY"})
CHEST = frozenset({"CHEST", "THORAX", "RIB", "RIBS", "STERNUM", "LUNG", "HEART"})
#: Most images accepted in one study: the API's limit per request (MURA studies have 1 to 4 views).
MAX_IMAGES_PER_STUDY = 16


def refusal_reason(header: Dataset) -> str | None:
    """Why this image must not be analysed, or None when it may be."""
    with no_value_echo():
        fields = technical_fields(header)
        sop = header.get("SOPClassUID")
    modality = fields["modality"]
    if sop is not None and safe_uid(sop) not in IMAGE_SOP_CLASSES:
        name = uid_name(sop) or safe_uid(sop)
        return f"SOP class {name} is not a CR or DX radiograph"
    if modality not in MODALITIES:
        return f"modality {modality or 'not stated'} is not a projection radiograph (CR or DX)"
    part = fields["body_part_examined"]
    if part in CHEST:
        return f"body part {part}: chest radiographs are outside this model's musculoskeletal use"
    if part is not None and part not in UPPER_LIMB:
        return f"body part {part} is not an upper-limb part the model was made for (MURA)"
    return None


def too_many(n_images: int) -> str | None:
    """The refusal for a study of ``n_images`` images, if it has too many."""
    if n_images > MAX_IMAGES_PER_STUDY:
        return (f"the study has {n_images} images, more than the {MAX_IMAGES_PER_STUDY} analysed per study "
                "(a musculoskeletal radiograph study has a few views): not analysed")
    return None
