"""Admin page "Monitoring": the drift signal as a chart - each day's share of abnormal
decisions (and of input-guard flags) against the share the model called abnormal on its
hold-out - the same figures ``GET /metrics`` gives Prometheus."""

from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine

from fracturescan.monitoring import (
    daily_trend,
    holdout_abnormal_share,
    holdout_guard_flag_share,
)
from fracturescan.service import ModelChoice

DAYS = 30


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def render_monitoring(engine: Engine, choice: ModelChoice | None) -> None:
    """The last 30 days of the model in use: analyses per day and the abnormal share."""
    import pandas as pd

    st.header("Monitoring")
    if choice is None:
        st.info("No model is in use yet: there is nothing to monitor.")
        return
    trend = daily_trend(engine, days=DAYS, model_id=choice.model_id)
    expected = holdout_abnormal_share(choice.metadata.metrics)
    expected_flags = holdout_guard_flag_share(choice.metadata.guard)
    week = trend[-7:]
    week_n = sum(d.analyses for d in week)
    st.markdown(
        f"Model **{choice.model_id}**. Today (UTC): {trend[-1].analyses} analyses, "
        f"{_percent(trend[-1].abnormal_share)} abnormal; last 7 days: {week_n} analyses, "
        f"{_percent(sum(d.abnormal for d in week) / week_n if week_n else None)} abnormal; "
        f"hold-out: {_percent(expected)} abnormal"
        + ("" if expected is not None else " (not recorded in this checkpoint)") + ". "
        f"Flagged images today: {_percent(trend[-1].guard_flag_share)} of {trend[-1].images}; "
        f"hold-out: {_percent(expected_flags)}"
        + ("" if expected_flags is not None else " (this checkpoint has no input guard)") + ".")
    st.caption("A daily share far from the hold-out share means the patients, the images or their "
               "acquisition differ from what the model was validated on: a prompt to look, not a verdict. "
               "The hold-out share holds at the checkpoint's own threshold. The flag share counts images "
               "flagged by their DICOM header or the input guard; its hold-out share is the one the checkpoint "
               "records (else 5%, what the guard's threshold allows by construction).")
    frame = pd.DataFrame({
        "abnormal share (daily)": [d.abnormal_share for d in trend],
        "hold-out abnormal share": [expected] * len(trend),
        "input-guard flag share (daily, of images)": [d.guard_flag_share for d in trend],
        "hold-out flag share": [expected_flags] * len(trend),
    }, index=pd.to_datetime([d.day for d in trend]))
    st.line_chart(frame, y_label="share of analyses")
    st.bar_chart(pd.DataFrame({"analyses": [d.analyses for d in trend]}, index=frame.index), y_label="analyses per day")
