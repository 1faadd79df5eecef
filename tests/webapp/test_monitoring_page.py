"""The admin's Monitoring page: the daily abnormal share of the model in use, as numbers checked
against the audit rows and as a chart."""

from __future__ import annotations

from fracturescan.store.audit import ImageRecord, ModelRecord, record_analysis
from fracturescan.store.users import authenticate

from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD
from .test_app import login, new_app, texts


def test_monitoring_page_shows_the_daily_trend(engine) -> None:
    doctor = authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    # Three analyses by the model in use (run_a, the first found), two abnormal at 0.5; one by
    # another. One of run_a's four images is flagged; run_b's flagged image is not counted.
    flagged = ("DICOM Modality is CT, not a radiograph (CR or DX)",)
    plan = (("run_a", [(0.9, ())]), ("run_a", [(0.6, flagged), (0.6, ())]), ("run_a", [(0.2, ())]),
            ("run_b", [(0.9, flagged)]))
    for model_id, images in plan:
        record_analysis(engine, doctor, ModelRecord(model_id, "v", "a" * 64, True), 0.5,
                        [ImageRecord("b" * 64, "png", p, flags=flags) for p, flags in images])
    at = login(new_app(), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = "monitoring"
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "Model **run_a**. Today (UTC): 3 analyses, 67% abnormal; last 7 days: 3 analyses, 67% abnormal" in shown
    assert "hold-out: - abnormal (not recorded in this checkpoint)" in shown  # the test checkpoint has none
    assert "Flagged images today: 25% of 4; hold-out: - (this checkpoint has no input guard)" in shown
    assert "a prompt to look, not a verdict" in shown
    assert len(at.get("vega_lite_chart")) == 2  # the share chart and the analyses per day
