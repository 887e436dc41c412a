"""Liveness: every loop thread is inside a bounded wait, or on its way to the next one.

A loop thread about to block — a long poll, a batch write under the retry
policy, a backoff, a wait for room in the buffer — says how long that wait
can last at most (`Waits.bounded`); once out of it, it is working and due
at its next wait at once. The loop is stuck when a thread has overrun its
bound by more than `slack` seconds (blocked outside any wait, or in one
whose bound failed), or has died without leaving. However long an outage
lasts, a thread waiting it out within its bound is alive: the outage shows
in readiness, and ``--max-retry-time`` ends it.

`Waits` is given `now` when asked and has an injectable clock, so the rule
is tested with plain numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Waits:
    """Until when each watched thread may stay where it is, keyed by thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[threading.Thread, float] = {}
        self._lock = threading.Lock()

    def enter(self, seconds: float) -> None:
        """The calling thread waits at most `seconds` from now (0: it is working)."""
        until = self._clock() + seconds
        with self._lock:
            self._due[threading.current_thread()] = until

    @contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        """Around a blocking call that ends within `seconds`, whatever it waits for."""
        self.enter(seconds)
        try:
            yield
        finally:
            self.enter(0)

    def leave(self) -> None:
        """The calling thread is done with the loop: no longer watched."""
        with self._lock:
            self._due.pop(threading.current_thread(), None)

    def stuck(self, now: float, slack: float) -> list[str]:
        """Names of watched threads past their bound by more than `slack`, or dead."""
        with self._lock:
            due = list(self._due.items())
        return sorted(t.name for t, until in due if now > until + slack or not t.is_alive())
