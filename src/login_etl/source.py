"""The source seam: receive, delete and extend messages, and the `Message` they carry.

`SqsSource` (in `sqs`) is the real one; `MemorySource` here is a small queue
with visibility timeouts for unit tests and the benchmark's no-network mode.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

# Most messages one SQS receive, delete or visibility call may carry.
SQS_BATCH_MAX = 10


class Message(msgspec.Struct, frozen=True, gc=False):
    """One received SQS message; `receipt` is what deletes or extends it.

    A frozen msgspec struct, like `transform.Row`: every receive builds one per message.
    """

    message_id: str
    receipt: str
    body: str
    sent_at: datetime
    receive_count: int = 1

    def __repr__(self) -> str:  # the body may hold PII
        return f"Message(message_id={self.message_id!r}, receive_count={self.receive_count})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """What rich's pretty printer shows: as `repr`, never the body (msgspec's shows all)."""
        return [("message_id", self.message_id), ("receive_count", self.receive_count)]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Approximate message counts of a queue."""

    visible: int
    in_flight: int
    delayed: int = 0


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """Queue settings and depth, as the source reports them."""

    visible: int
    in_flight: int
    delayed: int = 0
    visibility_timeout: int = 30
    retention_seconds: int = 345_600
    dlq_url: str | None = None
    max_receive_count: int | None = None


class Source(Protocol):
    """Where messages come from.

    A `timeout`, when given, is how long a call may take before it fails as
    retryable (the time left of the retry budget); a long poll may still take
    its `wait_seconds`.
    """

    def receive(
        self, max_messages: int, wait_seconds: int, *, timeout: float | None = None
    ) -> list[Message]:
        """Up to `max_messages` messages, waiting up to `wait_seconds` for the first."""
        ...

    def delete(self, messages: Sequence[Message], *, timeout: float | None = None) -> list[str]:
        """Delete messages; return the ids that could not be deleted."""
        ...

    def change_visibility(
        self, messages: Sequence[Message], seconds: int, *, timeout: float | None = None
    ) -> list[str]:
        """Set the visibility timeout of in-flight messages; return ids that failed."""
        ...

    def info(self) -> QueueInfo:
        """Current depth and settings of the queue (read once at start)."""
        ...

    def depth(self) -> QueueDepth:
        """Current depth only: the cheap call for polling."""
        ...


class MemorySource:
    """An in-process queue with at-least-once delivery and visibility timeouts."""

    def __init__(
        self,
        bodies: Sequence[str] = (),
        *,
        visibility_timeout: int = 30,
        clock: Callable[[], float] = time.monotonic,
        sent_at: datetime | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._visible: deque[tuple[str, str, datetime, int]] = deque()
        self._in_flight: dict[str, tuple[str, str, datetime, int, float]] = {}
        # (deadline, sequence, receipts), one entry per call that sets leases; stale
        # receipts are skipped on expiry, so expiring costs O(log n) per call instead
        # of a scan of everything held.
        self._deadlines: list[tuple[float, int, list[str]]] = []
        self.visibility_timeout = visibility_timeout
        self.deleted: set[str] = set()
        self.receives = 0
        for body in bodies:
            self.send(body, sent_at=sent_at)

    def send(self, body: str, *, sent_at: datetime | None = None) -> str:
        """Enqueue one body; return its message id."""
        message_id = f"m-{next(self._ids):08d}"
        with self._lock:
            self._visible.append((message_id, body, sent_at or datetime.now(UTC), 0))
        return message_id

    def _expire(self) -> None:
        now = self._clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, receipts = heapq.heappop(self._deadlines)
            for receipt in receipts:
                entry = self._in_flight.get(receipt)
                if entry is not None and entry[4] == deadline:  # not deleted, not extended since
                    del self._in_flight[receipt]
                    self._visible.append(entry[:4])

    def receive(
        self, max_messages: int, wait_seconds: int, *, timeout: float | None = None
    ) -> list[Message]:
        """Hand out visible messages and hide them for the visibility timeout."""
        with self._lock:
            self.receives += 1
            self._expire()
            out: list[Message] = []
            receipts: list[str] = []
            deadline = self._clock() + self.visibility_timeout
            for _ in range(min(max_messages, len(self._visible))):
                mid, body, sent, count = self._visible.popleft()
                receipt = f"r-{next(self._ids)}"
                self._in_flight[receipt] = (mid, body, sent, count + 1, deadline)
                receipts.append(receipt)
                out.append(Message(mid, receipt, body, sent, count + 1))
            if receipts:
                heapq.heappush(self._deadlines, (deadline, next(self._ids), receipts))
            return out

    def delete(self, messages: Sequence[Message], *, timeout: float | None = None) -> list[str]:
        """Remove in-flight messages by receipt."""
        with self._lock:
            failed = []
            for m in messages:
                if self._in_flight.pop(m.receipt, None) is None:
                    failed.append(m.message_id)
                else:
                    self.deleted.add(m.message_id)
            return failed

    def change_visibility(
        self, messages: Sequence[Message], seconds: int, *, timeout: float | None = None
    ) -> list[str]:
        """Move the deadline of in-flight messages `seconds` from now."""
        with self._lock:
            failed = []
            receipts = []
            deadline = self._clock() + seconds
            for m in messages:
                entry = self._in_flight.get(m.receipt)
                if entry is None:
                    failed.append(m.message_id)
                    continue
                self._in_flight[m.receipt] = (*entry[:4], deadline)
                receipts.append(m.receipt)
            if receipts:
                heapq.heappush(self._deadlines, (deadline, next(self._ids), receipts))
            self._expire()
            return failed

    def depth(self) -> QueueDepth:
        """Depth."""
        with self._lock:
            self._expire()
            return QueueDepth(visible=len(self._visible), in_flight=len(self._in_flight))

    def info(self) -> QueueInfo:
        """Depth and settings."""
        with self._lock:
            self._expire()
            return QueueInfo(
                visible=len(self._visible),
                in_flight=len(self._in_flight),
                visibility_timeout=self.visibility_timeout,
            )
