"""Prometheus metrics of one node (own registry, so several nodes can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The counters, gauges and histograms ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_received = Counter(
            "hypoxnode_instances_received", "Instances stored and acknowledged", registry=r
        )
        self.bytes_received = Counter(
            "hypoxnode_received_bytes", "Bytes of instances stored", registry=r
        )
        self.instances_refused = Counter(
            "hypoxnode_instances_refused", "C-STORE requests answered with a failure status",
            registry=r,
        )
        self.associations = Counter(
            "hypoxnode_associations", "Associations by outcome", ["outcome"], registry=r
        )
        self.studies_processed = Counter(
            "hypoxnode_studies_processed", "Studies quantified with results", registry=r
        )
        self.studies_failed = Counter(
            "hypoxnode_studies_failed", "Studies that could not be quantified", registry=r
        )
        self.processing_seconds = Histogram(
            "hypoxnode_processing_seconds", "Wall time of quantifying one study",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600), registry=r,
        )
        self.exports_sent = Counter(
            "hypoxnode_exports_sent", "Result objects delivered", registry=r
        )
        self.export_retries = Counter(
            "hypoxnode_export_retries", "Failed export attempts that will be retried", registry=r
        )
        self.export_failures = Counter(
            "hypoxnode_export_failures", "Exports given up", registry=r
        )
        self.queue_length = Gauge(
            "hypoxnode_queue_length", "Studies queued or processing", registry=r
        )
        self.exports_pending = Gauge(
            "hypoxnode_exports_pending", "Result objects waiting to be delivered", registry=r
        )
        self.cluster_jobs = Gauge(
            "hypoxnode_cluster_jobs", "Jobs of the whole cluster by queue and status",
            ["queue", "status"], registry=r,
        )
