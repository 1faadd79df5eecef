"""The Doctor page: upload a study, see probabilities, decision and Grad-CAM, give feedback."""

from __future__ import annotations

import logging
import math
import re
from typing import Callable, Sequence

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile
from sqlalchemy import Engine

from fracturescan.decision import DecisionRule
from fracturescan.errors import RoutingError
from fracturescan.inference import Predictor
from fracturescan.notices import INTENDED_USE, SYNTHETIC_MODEL, heatmap_caption
from fracturescan.routing import Route, covered_parts, part_assignments, route_study
from fracturescan.service import (LOCALISATION_BAR, AnalysedImage, Analysis, ModelChoice, analyse_and_record,
                                  make_overlay)
from fracturescan.store.audit import record_feedback
from fracturescan.store.users import UserInfo

log = logging.getLogger(__name__)

_RESULT = "doctor_analysis"
_INCLUDE_FLAGGED = "doctor_include_flagged"
_ROUTE = "doctor_route"
_SOURCE = "doctor_source"  # (uploads, model) of the shown analysis, for its DICOM results
_DICOM_ZIP = "doctor_dicom_zip"
_AUTOMATIC = "Automatic (from the DICOM header)"
#: Loads a model for an analysis: choice -> (predictor, threshold).
Loader = Callable[[ModelChoice], tuple[Predictor, float]]
#: How each level of the decision rule reads on the page.
LEVEL_TEXT = {"abnormal": "fracture / abnormality likely (high-specificity point)",
              "doubt": "doubt: between the two operating points, read with extra care",
              "normal": "no abnormality expected (high-sensitivity point)"}

#: Characters Streamlit's Markdown gives a meaning (links, images, emphasis, LaTeX, directives).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def plain(text: object) -> str:
    """``text`` shown literally inside Markdown: every special character escaped, on one line.

    Upload names and DICOM values come from outside; unescaped, a name like
    ``[x](https://…)`` or ``![x](https://…)`` would become a link or make the browser fetch an
    image from anywhere.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def model_header(choice: ModelChoice, threshold: float) -> None:
    """Model name, version, threshold, intended use, and the synthetic-data banner."""
    meta = choice.metadata
    if meta.synthetic:
        st.error(SYNTHETIC_MODEL, icon="⚠️")
    st.caption(f"Model **{choice.model_id}** ({meta.arch}), version {choice.version}, "
               f"fracturescan {meta.package_version or '?'} · decision threshold **{threshold:.2f}**")
    _localisation_note(choice)
    for note in DecisionRule.from_metadata(meta).missing_notes():
        st.caption(f"This checkpoint has {note}.")
    with st.expander("Intended use and model card"):
        st.write(INTENDED_USE)
        st.markdown(choice.model_card() or "_No model card in this checkpoint._")


def _localisation_note(choice: ModelChoice) -> None:
    """Say whether this model's heatmaps were checked against known fracture boxes, and how they did."""
    check = choice.localisation()
    if check is None:
        st.caption("Heatmap localisation: not measured for this model version "
                   "(`fracturescan explain MODEL --evaluate PHANTOM_DATA`).")
    elif check.reliable:
        st.caption(f"Heatmap localisation check ({check.split} phantoms): the heatmap peak fell inside the "
                   f"fracture box for {check.score:.0%} of {check.n_true_positive} detected fractures.")
    else:
        score = "no detected fracture to score" if check.score is None else f"{check.score:.0%}"
        st.warning(f"**Heatmaps from this model did not reliably point at known fractures** "
                   f"(pointing game on {check.split} phantoms: {score} of {check.n_true_positive} detected "
                   f"fractures; bar {LOCALISATION_BAR:.0%}). Treat the overlay with extra caution.", icon="⚠️")


def _clear_result() -> None:
    for key in (_RESULT, _ROUTE, _SOURCE, _DICOM_ZIP):
        st.session_state.pop(key, None)


def _part_selector(engine: Engine, models: Sequence[ModelChoice]) -> str | None:
    """The body-part choice (None: automatic); shown only when models record their parts."""
    if not covered_parts(models):
        return None
    labels = {_AUTOMATIC: None}
    for part, choice in part_assignments(engine, models).items():
        labels[f"{part}: model {choice.model_id}" if choice else f"{part}: no model covers it"] = part
    picked = st.selectbox("Body part", list(labels), key="body_part", on_change=_clear_result,
                          help="Which model analyses the study. Automatic uses the DICOM BodyPartExamined, "
                               "else the default model.")
    return labels[picked]


def _route(engine: Engine, models: Sequence[ModelChoice], files: list[UploadedFile], part: str | None) -> Route | None:
    """The study's route, or None after showing why it cannot be analysed (one line)."""
    try:
        return route_study(engine, models, [(f.name, f.getvalue()) for f in files], part)
    except RoutingError as exc:
        st.error(str(exc))
        return None


def _decision_text(probability: float, threshold: float) -> str:
    verdict = "ABNORMAL" if probability >= threshold else "normal"
    sign = "≥" if probability >= threshold else "<"
    # Enough decimals that p and the threshold never print equal while the sign says "<".
    digits = 2
    while digits < 6 and round(probability, digits) == round(threshold, digits):
        digits += 1
    return f"{verdict} — p = {probability:.{digits}f} {sign} threshold {threshold:.{digits}f}"


def _run_analysis(engine: Engine, user: UserInfo, choice: ModelChoice, predictor: Predictor,
                  threshold: float, store_pixels: bool, files: list[UploadedFile], max_upload_mb: float) -> None:
    uploads = [(f.name, f.getvalue()) for f in files]
    with st.spinner("Analysing…"):
        # Decodes on this session's thread; scoring waits for the model thread.
        analysis = analyse_and_record(engine, user, choice, predictor, threshold, uploads,
                                      store_pixels=store_pixels, max_bytes=int(max_upload_mb * 1_000_000),
                                      include_flagged=bool(st.session_state.get(_INCLUDE_FLAGGED, False)))
    st.session_state[_RESULT] = analysis
    st.session_state[_SOURCE] = (uploads, choice)


def _show_image(item: AnalysedImage, analysis: Analysis, show_heatmap: bool, alpha: float) -> None:
    if item.error:
        st.error(f"**{plain(item.name)}** could not be analysed: {plain(item.error)}")
        return
    level = f" · **{item.level}**" if item.level else ""
    st.markdown(f"**{plain(item.name)}** — {_decision_text(item.probability, analysis.threshold)}{level}")
    for flag in item.flags:
        left_out = "" if item.used else " (left out of the study probability)"
        st.warning(f"**{plain(flag)}**{left_out}", icon="⚠️")
    if show_heatmap and item.heatmap is not None:
        st.image(make_overlay(item.display, item.heatmap, alpha), width="stretch")
        st.caption(heatmap_caption(item.heatmap_method))
    else:
        st.image(item.display, clamp=True, width="stretch")
    if item.dicom_info:
        info = {k: v for k, v in item.dicom_info.items() if v is not None and k != "transfer_syntax"}
        st.caption("DICOM: " + ", ".join(f"{plain(k)} {plain(v)}" for k, v in info.items()))


def _show_result(engine: Engine, user: UserInfo, analysis: Analysis) -> None:
    study_p = analysis.study_probability
    if not analysis.readable:
        st.warning("None of the files could be analysed; see the messages below.")
    elif study_p is None:
        st.warning("Every image was flagged as unreliable (see below): no study result.")
    else:
        used = sum(i.used for i in analysis.readable)
        text = f"Study ({used} image(s)): {_decision_text(study_p, analysis.threshold)}"
        (st.error if study_p >= analysis.threshold else st.success)(text)
        if analysis.level:
            # The three-level answer from the checkpoint's two operating points.
            st.markdown(f"Three-level reading: **{LEVEL_TEXT[analysis.level]}**")
        st.caption(f"Analysed in {analysis.seconds:.1f} s · audit record #{analysis.audit_id}")
    for note in analysis.decision.notes if analysis.decision else ():
        st.caption(note)
    show = st.toggle("Show heatmap", value=True, disabled=not analysis.heatmaps_available)
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, disabled=not show)
    if not analysis.heatmaps_available:
        st.info("Heatmaps are unavailable in this installation.")
    for item in analysis.images:
        with st.container(border=True):
            _show_image(item, analysis, show and analysis.heatmaps_available, alpha)
    _dicom_download(analysis)
    if analysis.audit_id is not None:
        _feedback_form(engine, user, analysis.audit_id)


def _dicom_download(analysis: Analysis) -> None:
    """For a DICOM study: its SR and heatmap SCs as a zip, to store in PACS by hand."""
    source = st.session_state.get(_SOURCE)
    if source is None or not any(item.file_type == "dicom" for item in analysis.readable):
        return
    try:
        from fracturescan.pacs.files import zip_datasets
        from fracturescan.pacs.uploads import dicom_results
    except ImportError:  # the pacs extra is not installed
        return
    if _DICOM_ZIP not in st.session_state and st.button("Prepare DICOM results for PACS (SR + heatmap SCs)"):
        with st.spinner("Writing DICOM objects…"):
            datasets, note = dicom_results(analysis, *source)
        if note:
            st.info(note)
        else:
            st.session_state[_DICOM_ZIP] = zip_datasets(datasets)
    if _DICOM_ZIP in st.session_state:
        st.download_button("Download DICOM results (zip)", st.session_state[_DICOM_ZIP],
                           file_name="fracturescan_dicom_results.zip", mime="application/zip")
        st.caption("A structured report and a captioned heatmap per image, in a new series of the source "
                   "study: import them into PACS next to the images.")


def _feedback_form(engine: Engine, user: UserInfo, audit_id: int) -> None:
    with st.form("feedback", clear_on_submit=True):
        st.markdown("**Your reading**")
        verdict = st.radio("Do you agree with the study decision?", ["Agree", "Disagree"],
                           horizontal=True)
        note = st.text_area("Note (optional)", max_chars=4000)
        sent = st.form_submit_button("Save feedback")
    if sent:
        record_feedback(engine, user, audit_id, verdict == "Agree", note)
        st.success("Feedback saved to the audit trail.")


def render(engine: Engine, user: UserInfo, choice: ModelChoice | None, predictor: Predictor | None,
           threshold: float, store_pixels: bool, *, max_upload_mb: float = 50.0,
           models: Sequence[ModelChoice] = (), load: Loader | None = None) -> None:
    """Draw the page. ``choice``/``predictor`` are None when no model is configured.

    ``max_upload_mb`` is the per-file limit: the uploader refuses bigger files in the browser,
    and :func:`~fracturescan.webapp.service.analyse_uploads` refuses them again on the server.
    With ``models`` and ``load``, each study goes to the model for its body part
    (:mod:`fracturescan.routing`); ``choice`` is then the default model.
    """
    st.header("Analyse a study")
    if choice is None or predictor is None:
        st.error("No model is available. An administrator must configure a models folder.")
        return
    model_header(choice, threshold)
    default = choice
    files = st.file_uploader("Radiographs (PNG, JPEG or DICOM): one image or all views of a study",
                             accept_multiple_files=True, key="uploads", on_change=_clear_result,
                             help=f"At most {max_upload_mb:g} MB per file.",
                             max_upload_size=max(1, math.ceil(max_upload_mb)))
    part = _part_selector(engine, models) if load is not None else None
    st.checkbox("Count images flagged as unlike the training data in the study anyway", key=_INCLUDE_FLAGGED,
                help="Flagged images (input guard, or a DICOM header naming another modality or body part) "
                     "are shown but left out of the study probability unless this is ticked.")
    if st.button("Analyse images", type="primary", disabled=not files, width="stretch"):
        _clear_result()
        route = _route(engine, models, files, part) if load is not None else None
        if route is not None and load is not None:
            st.session_state[_ROUTE] = route
            if route.choice.model_id != choice.model_id:
                choice, (predictor, threshold) = route.choice, load(route.choice)
        if load is None or route is not None:
            _run_analysis(engine, user, choice, predictor, threshold, store_pixels, files, max_upload_mb)
    analysis = st.session_state.get(_RESULT)
    if analysis is not None:
        _show_route(st.session_state.get(_ROUTE), default)
        _show_result(engine, user, analysis)


def _show_route(route: Route | None, default: ModelChoice) -> None:
    """Which model answered and why; a different model than the default gets its own header."""
    if route is None:
        return
    why = {"request": "the body part you chose", "dicom": "the DICOM body part"}.get(route.source, "the default model")
    part = f" for {route.body_part}" if route.body_part else ""
    st.info(f"Analysed with model **{route.choice.model_id}**{part} ({why}).")
    for note in route.notes:
        st.caption(note)
    if route.choice.model_id != default.model_id:
        model_header(route.choice, st.session_state[_RESULT].threshold)
