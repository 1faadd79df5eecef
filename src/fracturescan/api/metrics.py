"""Prometheus metrics of the API at ``GET /metrics``, readable with an administrator's API key
(Prometheus sends it as a bearer token).

Two kinds of figures:

- per process, kept by a pure ASGI middleware: requests by route, method and status, and their
  latency. With several worker processes (``serve --workers N``) the processes share them through
  prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``);
- from the database at each scrape (:mod:`fracturescan.monitoring`), the same whichever worker
  answers: analyses by model and decision, the model in use, and the drift signal.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fracturescan.monitoring import daily_trend, decision_counts, holdout_abnormal_share, holdout_guard_flag_share

#: Latency buckets in seconds: a health check takes milliseconds, a study with heatmaps seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class RequestMetrics:
    """Request counters and latency histograms, registered in their own registry (one per app,
    so several apps in one process - tests - do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("fracturescan_http_requests", "HTTP requests answered, by route and status.",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("fracturescan_http_request_duration_seconds",
                                 "Time from request to the end of the answer, by route.", ("route", "method"),
                                 buckets=BUCKETS, registry=self.registry)



class MeasureRequests:
    """Pure ASGI middleware: counts and times every HTTP request, refused ones included."""

    def __init__(self, app: Any, metrics: RequestMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on, noting the status it is answered with and the time it took."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}  # if the app fails before answering

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The route template (/v1/studies/{audit_id}/feedback), never the raw path: ids and
            # random probes would each make a new time series.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(route, scope["method"]).observe(time.perf_counter() - start)


class AuditCollector(Collector):
    """Figures read from the audit trail and the model in use at each scrape."""

    def __init__(self, engine: Any, active: Callable[[], Any]) -> None:
        self.engine = engine
        self.active = active  # () -> ModelChoice | None

    def collect(self) -> Iterable[Any]:
        """Analyses by decision, the model in use, and the abnormal and flagged shares (today,
        7 days, hold-out)."""
        analyses = CounterMetricFamily("fracturescan_analyses", "Analyses recorded in the audit trail.",
                                       labels=("model_id", "decision"))
        for (model_id, abnormal), count in sorted(decision_counts(self.engine).items()):
            analyses.add_metric((model_id, "abnormal" if abnormal else "normal"), count)
        yield analyses
        choice = self.active()
        info = GaugeMetricFamily("fracturescan_model_info", "The model answering predictions (value 1).",
                                 labels=("model_id", "sha256", "synthetic"))
        if choice is not None:
            info.add_metric((choice.model_id, choice.metadata.sha256, str(choice.metadata.synthetic).lower()), 1)
        yield info
        shares = GaugeMetricFamily("fracturescan_abnormal_share", "Share of analyses decided abnormal: today "
                                   "(UTC) and the last 7 days for the model in use, and its hold-out share.",
                                   labels=("window",))
        guard = GaugeMetricFamily(
            "fracturescan_input_guard_flag_share", "Share of analysed images flagged as not to be trusted "
            "(DICOM header or input guard): today (UTC) and the last 7 days for the model in use, and "
            "the share of its hold-out images its input guard flagged as recorded in the checkpoint "
            "(else 1 - keep, 5% by construction; absent without an input guard).", labels=("window",))
        if choice is not None:
            trend = daily_trend(self.engine, days=7, model_id=choice.model_id)
            week_total = sum(day.analyses for day in trend)
            week_images = sum(day.images for day in trend)
            for window, value in (("today", trend[-1].abnormal_share),
                                  ("7d", sum(d.abnormal for d in trend) / week_total if week_total else None)):
                if value is not None:
                    shares.add_metric((window,), value)
            for window, value in (("today", trend[-1].guard_flag_share),
                                  ("7d", sum(d.guard_flags for d in trend) / week_images if week_images else None),
                                  ("holdout", holdout_guard_flag_share(choice.metadata.guard))):
                if value is not None:
                    guard.add_metric((window,), value)
            expected = holdout_abnormal_share(choice.metadata.metrics)
            if expected is not None:
                shares.add_metric(("holdout",), expected)
        yield shares
        yield guard


def registry_for_scrape(requests: RequestMetrics, audit: AuditCollector) -> CollectorRegistry:
    """What one scrape reports: this process's request metrics (or all workers' in
    multiprocess mode) and the audit figures."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = requests.registry
    combined = CollectorRegistry()
    combined.register(_Both(registry, audit))
    return combined


class _Both(Collector):
    def __init__(self, registry: CollectorRegistry, audit: AuditCollector) -> None:
        self.registry, self.audit = registry, audit

    def collect(self) -> Iterable[Any]:
        yield from self.registry.collect()
        yield from self.audit.collect()


def exposition(requests: RequestMetrics, audit: AuditCollector) -> tuple[bytes, str]:
    """The Prometheus text format of a scrape, and its content type."""
    return generate_latest(registry_for_scrape(requests, audit)), CONTENT_TYPE_LATEST


def install(app: Any, engine: Any, active: Callable[[], Any], current_user: Callable[..., Any]) -> None:
    """Measure every request of ``app`` and serve ``GET /metrics`` to administrators' keys."""
    from fastapi import Depends, HTTPException
    from fastapi.responses import Response

    requests = RequestMetrics()
    audit = AuditCollector(engine, active)
    app.add_middleware(MeasureRequests, metrics=requests)  # outermost: refusals are counted too

    @app.get("/metrics", include_in_schema=False)
    def metrics(user: Any = Depends(current_user)) -> Response:
        if user.role != "admin":
            raise HTTPException(403, "Metrics are for administrators: use an API key of an admin account.")
        body, content_type = exposition(requests, audit)
        return Response(body, media_type=content_type)
