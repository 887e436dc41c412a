"""Messages in hand: how many may be held, and when to extend their visibility.

SQS hides a received message for the queue's visibility timeout. A batch that
takes longer than that would see its messages handed to another worker, so
the heartbeat extends the lease of every message held longer than a third of
the timeout, back to a full timeout from now. A tick every sixth of the
timeout means a message is extended at most half a timeout after its last
extension; the other half is slack for a slow round of SQS calls.
`Capacity` bounds how many messages a worker holds at once (--max-in-flight),
and `Buffer` carries received messages from the receivers to the writer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence

from login_etl.source import Message


class Leases:
    """Thread-safe record of held messages, keyed by receipt handle."""

    def __init__(self, visibility_timeout: int) -> None:
        self.visibility_timeout = visibility_timeout
        self._held: dict[str, tuple[Message, float]] = {}
        self._lock = threading.Lock()

    @property
    def period(self) -> float:
        """Seconds between heartbeat ticks."""
        return max(0.2, self.visibility_timeout / 6)

    @property
    def extension(self) -> int:
        """The visibility timeout an extension sets, in seconds from now."""
        return self.visibility_timeout

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def add(self, messages: Iterable[Message], now: float) -> None:
        """Start holding `messages`, received at `now`."""
        with self._lock:
            for m in messages:
                self._held[m.receipt] = (m, now)

    def drop(self, messages: Iterable[Message]) -> None:
        """Stop holding `messages` (committed, released or deleted)."""
        with self._lock:
            for m in messages:
                self._held.pop(m.receipt, None)

    def due(self, now: float) -> list[Message]:
        """Messages whose lease was last set more than a third of the timeout ago."""
        due_age = self.visibility_timeout / 3
        with self._lock:
            return [m for m, since in self._held.values() if now - since >= due_age]

    def extended(self, messages: Sequence[Message], now: float, failed: Iterable[str]) -> int:
        """Record that `messages` were extended at `now`, except ids in `failed`; return count."""
        failed_ids = set(failed)
        done = 0
        with self._lock:
            for m in messages:
                if m.message_id in failed_ids or m.receipt not in self._held:
                    continue
                self._held[m.receipt] = (m, now)
                done += 1
        return done


class Capacity:
    """How many more messages may be held; receivers wait while none may."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._cond = threading.Condition()

    def acquire(self, most: int, timeout: float) -> int:
        """Take up to `most` slots, waiting up to `timeout` for one; return how many (0: none)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free > 0, timeout):
                return 0
            n = min(most, self._free)
            self._free -= n
            return n

    def release(self, n: int) -> None:
        """Give back `n` slots."""
        if n:
            with self._cond:
                self._free += n
                self._cond.notify_all()


class Buffer:
    """Received messages on their way to the writer.

    Receivers put one list per receive; the writer takes everything buffered
    in one step, so collecting a batch costs one lock round, not one per
    receive (each contended round is a thread switch for the writer).
    """

    def __init__(self) -> None:
        self._lists: deque[list[Message]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def put(self, messages: list[Message]) -> None:
        """Add one receive's messages."""
        with self._cond:
            self._lists.append(messages)
            self._cond.notify()

    def close(self) -> None:
        """No more puts are coming: a waiting take returns at once, and later ones never wait."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, timeout: float) -> list[Message]:
        """Everything buffered, in order, waiting up to `timeout` for something (unless closed)."""
        with self._cond:
            if not self._lists and not self._closed:
                self._cond.wait(timeout)
            taken = [m for messages in self._lists for m in messages]
            self._lists.clear()
            return taken

    def empty(self) -> bool:
        """True when nothing is buffered."""
        with self._cond:
            return not self._lists
