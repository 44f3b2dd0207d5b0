"""Prometheus metrics of one app (prometheus-client, a registry per app so tests and apps never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..ood import STATUSES

# Latency buckets for one image on a CPU: a few ms (ONNX, small model) to seconds (a busy ResNet50).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Request counts by route and status, latency histograms, refusals (401/413/503 and the gate's verdicts),
    and how long the model took to load."""

    def __init__(self, routes: set[str]):
        self.routes = routes  # known paths: anything else is counted as 'other' (no label per scanner's URL)
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("braintumor_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("braintumor_request_duration_seconds", "Time from request to response",
                                 ["route"], buckets=BUCKETS, registry=r)
        self.refused = Counter("braintumor_refused_requests", "Requests refused before inference: 401 no key, "
                               "413 too large, 429/503 busy or loading, 4xx bad input", ["route", "status"],
                               registry=r)
        self.verdicts = Counter("braintumor_verdicts", "Images classified, by the gate's status (uncertain and "
                                "out_of_distribution are not answered)", ["status"], registry=r)
        for s in STATUSES:
            self.verdicts.labels(s)
        self.load_seconds = Gauge("braintumor_model_load_seconds", "Seconds loading and warming up the model took",
                                  registry=r)
        self.model = Info("braintumor_model", "What this server runs", registry=r)

    def route(self, path: str) -> str:
        if path in self.routes:
            return path
        return "/static" if path.startswith("/static") else "other"

    def request(self, scope, status: int, seconds: float) -> None:
        route = self.route(scope["path"])
        self.requests.labels(route, scope["method"], str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if 400 <= status < 600 and status != 500:
            self.refused.labels(route, str(status)).inc()

    def verdict(self, status: str) -> None:
        self.verdicts.labels(status).inc()

    def loaded(self, seconds: float, info: dict[str, str]) -> None:
        self.load_seconds.set(seconds)
        self.model.info(info)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
