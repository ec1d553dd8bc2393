"""Prometheus metrics of one search service (one registry per app, so several apps can live in a process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Counters, histograms and gauges of ``/metrics`` (names prefixed ``axn_``).

    requests_total{status}, request_seconds (latency of answered requests),
    batch_size (requests per adaptive_search_batch call), batch_seconds,
    ce_pairs_total and ce_seconds_total (their rate is CE pairs/s),
    ce_pairs_per_second (of the last batch), queue_depth, batch_running.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("axn_requests", "Search requests by HTTP status", ["status"], registry=r)
        self.latency = Histogram("axn_request_seconds", "Latency of /search requests (all statuses)",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("axn_batch_size", "Requests per adaptive_search_batch call",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("axn_batch_seconds", "Wall time of one batch (embedding + AXN + CE)",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.ce_pairs = Counter("axn_ce_pairs", "(query, item) pairs scored by the cross-encoder", registry=r)
        self.ce_seconds = Counter("axn_ce_seconds", "Seconds spent inside the cross-encoder", registry=r)
        self.ce_rate = Gauge("axn_ce_pairs_per_second", "CE pairs per second inside the CE, last batch",
                             registry=r)
        self.queue_depth = Gauge("axn_queue_depth", "Requests waiting for a batch", registry=r)
        self.running = Gauge("axn_batch_running", "Requests in the batch being computed", registry=r)

    def record_batch(self, n_requests: int, seconds: float, ce_pairs: int, ce_seconds: float) -> None:
        self.batch_size.observe(n_requests)
        self.batch_seconds.observe(seconds)
        self.ce_pairs.inc(ce_pairs)
        self.ce_seconds.inc(ce_seconds)
        if ce_seconds > 0:
            self.ce_rate.set(ce_pairs / ce_seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
