"""What the worker did: plain counters for the core, Prometheus families for operators.

The loop reports to `Stats` (a batch committed, how long it took, when its
messages were sent, a retry) and imports no metrics library. When a worker
serves metrics, `Stats` also records each event in a `Metrics` object: one
prometheus-client family per entry of `FAMILIES`, plus the default process
and platform collectors. Labels are outcomes, rejection reasons and stage
names: never a value from a message.

`FAMILIES` is the one declaration of what a worker exports: name, help,
kind, and each label with its closed set of values (or None where the set
is open, as for rejection reasons). `Metrics` builds the families from it,
counters start at 0 for every combination of closed label values, and a
label value outside its declared set raises. `Stats.add` takes the names of
the plain counters declared there and raises on any other name.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from login_etl import __version__
from login_etl.extra import DROP_REASONS
from login_etl.liveness import Waits

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from login_etl.sink import WriteResult

# End-to-end lag reaches days when a backlog drains: buckets up to 4 days.
LAG_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400, 4 * 86400)
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LOOP_STAGES = frozenset({"receive", "write", "delete", "extend", "prune", "lake"})
LAKE_DROP_REASONS = frozenset(DROP_REASONS)  # why a lake record left a value out


@dataclass(frozen=True)
class Family:
    """One Prometheus family: `login_etl_<name>`, its help, kind and labels.

    `labels` maps each label name to its closed set of values, or None when
    the set is open. A `plain` counter has no labels and is bumped by
    `Stats.add(<name>=n)`, which keeps a `Stats` field of the same name.
    """

    name: str
    help: str
    kind: Literal["counter", "gauge", "histogram"] = "counter"
    labels: tuple[tuple[str, frozenset[str] | None], ...] = ()
    buckets: tuple[float, ...] = ()
    plain: bool = False


FAMILIES = (
    Family(
        "messages",
        "Messages that reached an outcome: loaded, rejected, or duplicate (skipped)",
        labels=(("outcome", frozenset({"loaded", "rejected", "duplicate"})),),
    ),
    Family("rejections", "Rejected messages by reason", labels=(("reason", None),)),
    Family(
        "retries",
        "Retried SQS, PostgreSQL or lake calls",
        # The loop's stages, and "startup" for what runs once before it
        # (queue settings, the KMS key, init-db).
        labels=(("stage", LOOP_STAGES | {"startup"}),),
    ),
    Family("received", "Messages received from SQS (redeliveries included)", plain=True),
    Family("redeliveries", "Messages received with a receive count above 1", plain=True),
    Family("deleted", "Messages deleted from SQS after commit", plain=True),
    Family(
        "delete_failures",
        "Messages SQS failed to delete (they return and are skipped)",
        plain=True,
    ),
    Family(
        "released",
        "Messages handed back to the queue at shutdown or after a failed write",
        plain=True,
    ),
    Family("extended", "Visibility extensions of held messages", plain=True),
    Family("batches", "Committed batches"),
    Family(
        "batch_duration_seconds",
        "Transform and commit of one batch",
        kind="histogram",
        buckets=BATCH_BUCKETS,
    ),
    Family(
        "lag_seconds",
        "End-to-end lag: commit time minus the message's SQS SentTimestamp",
        kind="histogram",
        buckets=LAG_BUCKETS,
    ),
    Family(
        "queue_messages",
        "Approximate queue depth, polled from SQS",
        kind="gauge",
        labels=(
            ("queue", frozenset({"main", "dlq"})),
            ("state", frozenset({"visible", "in_flight", "delayed"})),
        ),
    ),
    Family("in_hand", "Messages held by this worker", kind="gauge"),
    Family("last_commit_timestamp_seconds", "Unix time of the last committed batch", kind="gauge"),
    Family("lake_outbox_rows", "Rows waiting in the lake outbox", kind="gauge"),
    Family(
        "lake_values_dropped",
        "Values left out of lake records (allowed extra fields, app_version_raw) by reason",
        labels=(("reason", LAKE_DROP_REASONS),),
    ),
    Family("build_info", "Version of this worker", kind="gauge", labels=(("version", None),)),
)
PLAIN_COUNTERS = frozenset(f.name for f in FAMILIES if f.plain)
# What `Stats.add` takes: the plain counters, and the messages in hand (a gauge).
_ADDABLE = PLAIN_COUNTERS | {"in_hand"}


class Metrics:
    """The Prometheus families of one worker, in a registry of their own (or `registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = reg = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self._families: dict[str, Family] = {f.name: f for f in FAMILIES}
        self._objects: dict[str, Any] = {}
        for f in FAMILIES:
            name, names = f"login_etl_{f.name}", [label for label, _ in f.labels]
            if f.kind == "histogram":
                obj: Any = Histogram(name, f.help, names, buckets=f.buckets, registry=reg)
            else:
                obj = (Counter if f.kind == "counter" else Gauge)(name, f.help, names, registry=reg)
            self._objects[f.name] = obj
            closed = [values for _, values in f.labels if values is not None]
            if f.kind == "counter" and f.labels and len(closed) == len(f.labels):
                for combination in itertools.product(*(sorted(v) for v in closed)):
                    obj.labels(*combination)  # exported at 0 from the start
        self.family("build_info", version=__version__).set(1)

    def family(self, name: str, **labels: str) -> Any:
        """The prometheus-client object of a declared family, or its child for `labels`.

        Raises ValueError for an undeclared family, label or label value.
        """
        declared = self._families.get(name)
        if declared is None:
            raise ValueError(f"no metric family {name!r} is declared in FAMILIES")
        if set(labels) != {label for label, _ in declared.labels}:
            raise ValueError(f"metric {name!r} takes labels {declared.labels}, not {set(labels)}")
        for label, values in declared.labels:
            if values is not None and labels[label] not in values:
                raise ValueError(f"metric {name!r}: {labels[label]!r} is no declared {label}")
        obj = self._objects[name]
        return obj.labels(**labels) if labels else obj

    def queue_depth(self, queue: str, visible: int, in_flight: int, delayed: int) -> None:
        """Record a polled depth of the main queue or the DLQ."""
        for state, value in (("visible", visible), ("in_flight", in_flight), ("delayed", delayed)):
            self.family("queue_messages", queue=queue, state=state).set(value)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class Stats:
    """Counters for one worker process; safe to bump from several threads.

    Each plain counter of `FAMILIES` has an int field here of the same name
    (tests/unit/test_metrics.py holds the two together). With `metrics`,
    every event is also recorded in the Prometheus families.
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
        """Add to named counters atomically: plain counters of `FAMILIES`, and `in_hand`."""
        if unknown := counts.keys() - _ADDABLE:
            raise ValueError(f"no plain counter {sorted(unknown)} is declared in FAMILIES")
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
        if self.metrics is not None:
            for name, value in counts.items():
                if name == "in_hand" or value:
                    self.metrics.family(name).inc(value)

    def retried(self, stage: str) -> None:
        """Record one retried call of `stage` (receive, write, delete, extend, prune, lake)."""
        with self._lock:
            self.retries += 1
            self.retries_by_stage[stage] = self.retries_by_stage.get(stage, 0) + 1
        if self.metrics is not None:
            # What runs once before the loop (queue settings, the KMS key, init-db) is "startup".
            label = stage if stage in LOOP_STAGES else "startup"
            self.metrics.family("retries", stage=label).inc()

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
        m.family("messages", outcome="loaded").inc(result.loaded)
        m.family("messages", outcome="rejected").inc(result.rejected)
        m.family("messages", outcome="duplicate").inc(result.duplicates)
        for reason, n in result.reasons.items():
            m.family("rejections", reason=reason).inc(n)
        m.family("batches").inc()
        m.family("batch_duration_seconds").observe(seconds)
        now = datetime.now(UTC)
        lag = m.family("lag_seconds")
        for sent in sent_at:
            lag.observe(max(0.0, (now - sent).total_seconds()))
        m.family("last_commit_timestamp_seconds").set(now.timestamp())

    def lake_outbox(self, rows: int) -> None:
        """Record the lake outbox's backlog (the lake writer reports it after each pass)."""
        self.lake_outbox_rows = rows
        if self.metrics is not None:
            self.metrics.family("lake_outbox_rows").set(rows)

    def lake_dropped(self, reasons: Sequence[str]) -> None:
        """Record values lake records left out, one reason each (`LAKE_DROP_REASONS`)."""
        with self._lock:
            for reason in reasons:
                by = self.lake_dropped_by_reason
                by[reason] = by.get(reason, 0) + 1
        if self.metrics is not None:
            for reason in reasons:
                if reason in LAKE_DROP_REASONS:
                    self.metrics.family("lake_values_dropped", reason=reason).inc()

    @property
    def done(self) -> int:
        """Messages that reached a final outcome (loaded, rejected or skipped)."""
        return self.loaded + self.rejected + self.duplicates

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, plus elapsed seconds and rate."""
        with self._lock:
            elapsed = time.monotonic() - self.started_at
            return {
                **{name: getattr(self, name) for name in sorted(PLAIN_COUNTERS)},
                "loaded": self.loaded,
                "rejected": self.rejected,
                "duplicates": self.duplicates,
                "batches": self.batches,
                "retries": self.retries,
                "retries_by_stage": dict(self.retries_by_stage),
                "in_hand": self.in_hand,
                "reasons": dict(self.reasons),
                "elapsed_seconds": elapsed,
                "messages_per_second": (
                    (self.loaded + self.rejected + self.duplicates) / elapsed if elapsed else 0.0
                ),
            }
