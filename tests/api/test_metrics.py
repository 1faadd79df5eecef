"""The Prometheus endpoint: admins only; request counts and latencies by route and status equal
to the requests sent; analyses by decision equal to the audit trail; the model in use; the drift
signal (daily abnormal share vs the hold-out's) checked against counts made by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from fracturescan.monitoring import (  # noqa: E402
    daily_trend,
    holdout_abnormal_share,
    holdout_guard_flag_share,
)
from fracturescan.store.audit import ImageRecord, ModelRecord, record_analysis  # noqa: E402

from .conftest import DOCTOR_PASSWORD, png_bytes  # noqa: E402


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_and_analyses(make_client, api_checkpoint: Path, engine, doctor_key: str) -> None:
    from fracturescan.store.apikeys import create_key
    from fracturescan.store.users import authenticate

    client = make_client(model_paths=(api_checkpoint,))
    admin_key = create_key(engine, "admin", "prometheus", actor="test")[1]
    doctor = {"Authorization": f"Bearer {doctor_key}"}
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=doctor).status_code == 403
    sent = {("/v1/predict", "200"): 0, ("/v1/predict", "422"): 0, ("/v1/health", "200"): 0}
    for seed in range(3):
        assert client.post("/v1/predict", headers=doctor, files=[("files", ("a.png", png_bytes(seed)))]).status_code == 200
        sent["/v1/predict", "200"] += 1
    assert client.post("/v1/predict", headers=doctor, files=[("files", ("b.png", b"not an image"))]).status_code == 422
    sent["/v1/predict", "422"] += 1
    for _ in range(2):
        client.get("/v1/health")
        sent["/v1/health", "200"] += 1
    client.get("/v1/studies/7/nothing")  # unknown path: one series for all of them, not one per path
    # A study recorded outside the API (the web app): the analyses come from the shared database.
    user = authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    record_analysis(engine, user, ModelRecord("run", "v", "a" * 64, True), 0.5, [ImageRecord("b" * 64, "png", 0.9)])

    response = client.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    for (route, status), count in sent.items():
        method = "POST" if "predict" in route else "GET"
        assert _value(samples, "fracturescan_http_requests_total", route=route, method=method, status=status) == count
    assert _value(samples, "fracturescan_http_requests_total", route="/metrics", method="GET", status="401") == 1
    assert _value(samples, "fracturescan_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert _value(samples, "fracturescan_http_request_duration_seconds_count", route="/v1/predict",
                  method="POST") == 4
    # Analyses by decision, against the audit trail itself.
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from fracturescan.store.db import AuditStudy

    with Session(engine) as session:
        rows = session.scalars(select(AuditStudy)).all()
    assert len(rows) == 4
    for model_id in {r.model_id for r in rows}:
        for decision, abnormal in (("abnormal", True), ("normal", False)):
            expected = sum(r.model_id == model_id and r.abnormal == abnormal for r in rows)
            assert _value(samples, "fracturescan_analyses_total", model_id=model_id, decision=decision) == expected
    # The model in use, and today's abnormal share of its analyses (the API's three).
    [info] = [labels for (name, labels) in samples if name == "fracturescan_model_info"]
    assert dict(info)["model_id"] == "run" and dict(info)["synthetic"] == "true"
    api_rows = [r for r in rows if r.model_id == "run"]
    assert _value(samples, "fracturescan_abnormal_share", window="today") == pytest.approx(
        sum(r.abnormal for r in api_rows) / len(api_rows))
    assert _value(samples, "fracturescan_input_guard_flag_share", window="today") == 0


def test_daily_trend_counts_by_utc_day(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from fracturescan.store import audit
    from fracturescan.store.users import authenticate

    user = authenticate(engine, "drsmith", DOCTOR_PASSWORD)
    now = datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc)
    # (hours before now, model, probability): 3 today (2 abnormal), 2 yesterday (0 abnormal),
    # one of another model today, one 40 days ago (outside the window).
    plan = [(0.5, "m", 0.9), (1, "m", 0.7), (2, "m", 0.1), (24, "m", 0.2), (30, "m", 0.3),
            (3, "other", 0.9), (24 * 40, "m", 0.9)]
    for hours, model_id, p in plan:
        monkeypatch.setattr(audit, "utcnow", lambda h=hours: now - timedelta(hours=h))
        record_analysis(engine, user, ModelRecord(model_id, "v", "a" * 64, True), 0.5, [ImageRecord("c" * 64, "png", p)])
    trend = daily_trend(engine, days=7, model_id="m", now=now)
    assert [d.day.isoformat() for d in trend][-2:] == ["2026-11-28", "2026-11-29"] and len(trend) == 7
    assert (trend[-1].analyses, trend[-1].abnormal, trend[-1].abnormal_share) == (3, 2, pytest.approx(2 / 3))
    assert (trend[-2].analyses, trend[-2].abnormal) == (2, 0)
    assert sum(d.analyses for d in trend) == 5 and trend[0].abnormal_share is None
    assert sum(d.analyses for d in daily_trend(engine, days=7, now=now)) == 6  # all models


def test_holdout_share_from_the_checkpoint_metrics() -> None:
    assert holdout_abnormal_share({"holdout_study": {"n": 40, "tp": 9, "fp": 3, "tn": 25, "fn": 3}}) == 12 / 40
    assert holdout_abnormal_share({}) is None and holdout_abnormal_share({"holdout_study": {"n": 0}}) is None


def test_holdout_flag_share_from_the_guard_summary() -> None:
    # Recorded: the hold-out images the guard flagged; else what its threshold allows; no guard: none.
    assert holdout_guard_flag_share({"keep": 0.95, "kept_on_threshold_data": 0.9625}) == pytest.approx(0.0375)
    assert holdout_guard_flag_share({"keep": 0.95}) == pytest.approx(0.05)
    assert holdout_guard_flag_share({}) is None and holdout_guard_flag_share(None) is None
