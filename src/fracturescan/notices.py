"""Every warning and disclaimer fracturescan shows, worded once.

The CLI, the evaluation report, the model card, heatmap captions, the web app, the REST API and
the DICOM results all take their wording from here, so a model trained on synthetic phantoms,
or a heatmap, is described the same way wherever a person meets it.
"""

from __future__ import annotations

#: What the software is for (shown with every model and in the API schema).
INTENDED_USE = (
    "Second reader to help clinicians spot abnormalities (such as fractures) in musculoskeletal "
    "radiographs. Not a diagnostic device: every result must be reviewed by a qualified clinician."
)
#: With every prediction (CLI, API).
NOT_A_DIAGNOSIS = "Decision support only: not a diagnosis. A clinician must read every image."
#: With results filed into PACS (DICOM structured report), where no other wording travels along.
SECOND_READER = (
    "fracturescan is research software and a second reader: its probabilities and heatmaps are an "
    "explanation aid, not a diagnosis; every result must be reviewed by a qualified clinician."
)
#: In reports and the API description.
NOT_A_DEVICE = (
    "fracturescan is research software, not a diagnostic device. It is not cleared or approved "
    "for clinical use; every prediction must be reviewed by a qualified clinician."
)
#: Wherever a phantom-trained model's output is shown.
SYNTHETIC_MODEL = (
    "SYNTHETIC MODEL: trained on synthetic phantom images, not real radiographs. "
    "Its results mean nothing for real patients."
)
#: The same, in the few words an image caption has room for.
SYNTHETIC_MODEL_SHORT = "SYNTHETIC phantom model"
#: Wherever figures measured on phantom data are shown (evaluation report, comparison).
SYNTHETIC_DATA = (
    "SYNTHETIC DATA: these figures were measured on synthetic phantom images, not real radiographs. "
    "They show that the software pipeline runs; they say nothing about clinical performance."
)

def explanation_aid(method_label: str = "Grad-CAM") -> str:
    """The caption line that names a heatmap's method and says what it is not."""
    return f"{method_label}: explanation aid, not a diagnosis"


def heatmap_caption(method: str | None) -> str:
    """The sentence shown under a heatmap in the app and the API, naming how it was made."""
    if method == "reference-ig":
        return ("Heatmap (integrated gradients against a typical normal image): an explanation aid "
                "showing what made the model call this image more abnormal, not a diagnosis.")
    return "Grad-CAM heatmap: an explanation aid showing where the model looked, not a diagnosis."
