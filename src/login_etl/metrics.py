"""What the worker did: plain counters for the core, Prometheus families for operators.

The loop reports to `Stats` (a batch committed, how long it took, when its
messages were sent, a retry) and imports no metrics library. When a worker
serves metrics, `Stats` also records each event in a `Metrics` object: one
prometheus-client family per concept, with labels, plus the default process
and platform collectors. Labels are outcomes, rejection reasons (a closed
set) and stage names: never a value from a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from login_etl import __version__
from login_etl.extra import DROP_REASONS
from login_etl.liveness import Waits

if TYPE_CHECKING:
    from login_etl.sink import WriteResult

# End-to-end lag reaches days when a backlog drains: buckets up to 4 days.
LAG_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400, 4 * 86400)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LOOP_STAGES = frozenset({"receive", "write", "delete", "extend", "prune", "lake"})
LAKE_DROP_REASONS = frozenset(DROP_REASONS)  # why a lake record left a value out
# Plain counters that map one-to-one onto a Prometheus counter.
_COUNTERS = {
    "received": "Messages received from SQS (redeliveries included)",
    "redeliveries": "Messages received with a receive count above 1",
    "deleted": "Messages deleted from SQS after commit",
    "delete_failures": "Messages SQS failed to delete (they return and are skipped)",
    "released": "Messages handed back to the queue at shutdown or after a failed write",
    "extended": "Visibility extensions of held messages",
}


class Metrics:
    """The Prometheus families of one worker, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self.messages = Counter(
            "login_etl_messages",
            "Messages that reached an outcome: loaded, rejected, or duplicate (skipped)",
            ["outcome"],
            registry=reg,
        )
        for outcome in ("loaded", "rejected", "duplicate"):
            self.messages.labels(outcome)  # exported at 0 from the start
        self.rejections = Counter(
            "login_etl_rejections", "Rejected messages by reason", ["reason"], registry=reg
        )
        self.retries = Counter(
            "login_etl_retries", "Retried SQS, PostgreSQL or lake calls", ["stage"], registry=reg
        )
        self.counters = {
            name: Counter(f"login_etl_{name}", doc, registry=reg) for name, doc in _COUNTERS.items()
        }
        self.batches = Counter("login_etl_batches", "Committed batches", registry=reg)
        self.batch_duration = Histogram(
            "login_etl_batch_duration_seconds",
            "Transform and commit of one batch",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.lag = Histogram(
            "login_etl_lag_seconds",
            "End-to-end lag: commit time minus the message's SQS SentTimestamp",
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.queue = Gauge(
            "login_etl_queue_messages",
            "Approximate queue depth, polled from SQS",
            ["queue", "state"],
            registry=reg,
        )
        self.in_hand = Gauge("login_etl_in_hand", "Messages held by this worker", registry=reg)
        self.last_commit = Gauge(
            "login_etl_last_commit_timestamp_seconds",
            "Unix time of the last committed batch",
            registry=reg,
        )
        self.outbox = Gauge(
            "login_etl_lake_outbox_rows", "Rows waiting in the lake outbox", registry=reg
        )
        self.lake_dropped = Counter(
            "login_etl_lake_values_dropped",
            "Values left out of lake records (allowed extra fields, app_version_raw) by reason",
            ["reason"],
            registry=reg,
        )
        for reason in LAKE_DROP_REASONS:
            self.lake_dropped.labels(reason)  # a closed set, exported at 0 from the start
        Gauge("login_etl_build_info", "Version of this worker", ["version"], registry=reg).labels(
            __version__
        ).set(1)

    def queue_depth(self, queue: str, visible: int, in_flight: int, delayed: int) -> None:
        """Record a polled depth of the main queue or the DLQ."""
        for state, value in (("visible", visible), ("in_flight", in_flight), ("delayed", delayed)):
            self.queue.labels(queue, state).set(value)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class Stats:
    """Counters for one worker process; safe to bump from several threads.

    With `metrics`, every event is also recorded in the Prometheus families.
    """

    received: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicates: int = 0
    deleted: int = 0
    delete_failures: int = 0
    released: int = 0
    extended: int = 0
    batches: int = 0
    retries: int = 0
    redeliveries: int = 0
    in_hand: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    retries_by_stage: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    last_commit_at: float | None = None
    # Where each loop thread waits and until when: what /healthz watches.
    waits: Waits = field(default_factory=Waits, repr=False)
    metrics: Metrics | None = field(default=None, repr=False)
    # Rows waiting in the lake outbox, as the lake writer last saw them.
    lake_outbox_rows: int = 0
    # Values lake records left out, by reason.
    lake_dropped_by_reason: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to named counters atomically."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
        if self.metrics is not None:
            for name, value in counts.items():
                if name == "in_hand":
                    self.metrics.in_hand.inc(value)
                elif value:
                    self.metrics.counters[name].inc(value)

    def retried(self, stage: str) -> None:
        """Record one retried call of `stage` (receive, write, delete, extend, prune, lake)."""
        with self._lock:
            self.retries += 1
            self.retries_by_stage[stage] = self.retries_by_stage.get(stage, 0) + 1
        if self.metrics is not None:
            # A closed label set: the loop's stages, and "startup" for what runs once
            # before it (queue settings, the KMS key, init-db).
            self.metrics.retries.labels(stage if stage in LOOP_STAGES else "startup").inc()

    def committed(
        self, result: WriteResult, *, seconds: float = 0.0, sent_at: Sequence[datetime] = ()
    ) -> None:
        """Record one committed batch: outcome, duration, and when its messages were sent."""
        with self._lock:
            self.loaded += result.loaded
            self.rejected += result.rejected
            self.duplicates += result.duplicates
            self.batches += 1
            for reason, n in result.reasons.items():
                self.reasons[reason] = self.reasons.get(reason, 0) + n
            self.last_commit_at = time.monotonic()
        m = self.metrics
        if m is None:
            return
        m.messages.labels("loaded").inc(result.loaded)
        m.messages.labels("rejected").inc(result.rejected)
        m.messages.labels("duplicate").inc(result.duplicates)
        for reason, n in result.reasons.items():
            m.rejections.labels(reason).inc(n)
        m.batches.inc()
        m.batch_duration.observe(seconds)
        now = datetime.now(UTC)
        for sent in sent_at:
            m.lag.observe(max(0.0, (now - sent).total_seconds()))
        m.last_commit.set(now.timestamp())

    def lake_outbox(self, rows: int) -> None:
        """Record the lake outbox's backlog (the lake writer reports it after each pass)."""
        self.lake_outbox_rows = rows
        if self.metrics is not None:
            self.metrics.outbox.set(rows)

    def lake_dropped(self, reasons: Sequence[str]) -> None:
        """Record values lake records left out, one reason each (`LAKE_DROP_REASONS`)."""
        with self._lock:
            for reason in reasons:
                by = self.lake_dropped_by_reason
                by[reason] = by.get(reason, 0) + 1
        if self.metrics is not None:
            for reason in reasons:
                if reason in LAKE_DROP_REASONS:
                    self.metrics.lake_dropped.labels(reason).inc()

    @property
    def done(self) -> int:
        """Messages that reached a final outcome (loaded, rejected or skipped)."""
        return self.loaded + self.rejected + self.duplicates

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, plus elapsed seconds and rate."""
        with self._lock:
            elapsed = time.monotonic() - self.started_at
            return {
                "received": self.received,
                "loaded": self.loaded,
                "rejected": self.rejected,
                "duplicates": self.duplicates,
                "deleted": self.deleted,
                "delete_failures": self.delete_failures,
                "released": self.released,
                "extended": self.extended,
                "batches": self.batches,
                "retries": self.retries,
                "retries_by_stage": dict(self.retries_by_stage),
                "redeliveries": self.redeliveries,
                "in_hand": self.in_hand,
                "reasons": dict(self.reasons),
                "elapsed_seconds": elapsed,
                "messages_per_second": (
                    (self.loaded + self.rejected + self.duplicates) / elapsed if elapsed else 0.0
                ),
            }
