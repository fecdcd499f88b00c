"""What a running reward server counts, in Prometheus's text format (``GET /metrics``).

Each server owns its registry (no process-wide state), so several servers in
one process, as in the tests, count apart.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

__all__ = ["CONTENT_TYPE", "ServerMetrics"]


class ServerMetrics:
    """Requests, scored conversations and tokens, latency, batch sizes, queue depth."""

    def __init__(self, identity: dict[str, str]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sarm_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "sarm_request_seconds",
            "time from request to response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.conversations = Counter(
            "sarm_scored_conversations", "conversations scored", registry=r
        )
        self.tokens = Counter("sarm_scored_tokens", "tokens scored (after truncation)", registry=r)
        self.batch_rows = Histogram(
            "sarm_batch_rows", "conversations per gathered batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.queued = Gauge("sarm_queued_conversations", "conversations waiting", registry=r)
        self.disconnects = Counter(
            "sarm_client_disconnects", "requests whose client left before the answer", registry=r
        )
        self.skipped = Counter(
            "sarm_skipped_conversations",
            "conversations not scored because their client had left",
            registry=r,
        )
        info = Gauge("sarm_model_info", "the served model (value 1)", list(identity), registry=r)
        info.labels(**identity).set(1)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
