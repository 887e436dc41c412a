"""Plain counters kept by the pipeline, and their Prometheus export.

The core only bumps `Stats`; `serve` exposes a snapshot over HTTP for
Prometheus (and KEDA or an HPA) when ``--metrics-port`` is set. Labels are
rejection reasons and nothing else: never a value from a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from login_etl.sink import WriteResult


@dataclass
class Stats:
    """Counters for one worker process; safe to bump from several threads."""

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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to named counters atomically."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def retried(self, stage: str) -> None:
        """Record one retried call of `stage` (receive, write, delete, extend, prune)."""
        with self._lock:
            self.retries += 1
            self.retries_by_stage[stage] = self.retries_by_stage.get(stage, 0) + 1

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


_COUNTERS = {
    "received": "Messages received from SQS (redeliveries included)",
    "loaded": "Rows loaded into user_logins",
    "rejected": "Messages recorded in user_logins_rejected",
    "duplicates": "Redelivered messages skipped by the ledger",
    "deleted": "Messages deleted from SQS after commit",
    "delete_failures": "Messages SQS failed to delete (they return and are skipped)",
    "released": "Messages handed back to the queue at shutdown",
    "extended": "Visibility extensions sent for slow batches",
    "batches": "Committed batches",
    "retries": "Retried SQS or PostgreSQL operations",
}


class _Collector:
    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self._stats.snapshot()
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"login_etl_{name}", doc, value=snap[name])
        by_reason = CounterMetricFamily(
            "login_etl_rejected_by_reason", "Rejections by reason", labels=["reason"]
        )
        for reason, n in sorted(snap["reasons"].items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        yield GaugeMetricFamily(
            "login_etl_in_hand", "Messages held by this worker", snap["in_hand"]
        )


def serve(stats: Stats, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's port
    """Expose `stats` at http://addr:port/metrics in Prometheus text format."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_Collector(stats))
    start_http_server(port, addr=addr, registry=registry)
