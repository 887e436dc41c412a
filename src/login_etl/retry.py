"""One retry policy for every call the worker makes to SQS or PostgreSQL.

`Backoff` is the retry state of one failing call: a delay and a give-up
instant. It is given the time and never reads a clock or sleeps, so a unit
test walks it with plain numbers (psycopg_pool's ``AttemptWithBackoff`` is
the model). `Retrier` runs a call under that policy: only `RetryableError`
is retried, the wait is on the stop event (a shutdown cuts it short), and a
failure that outlasts ``max_time`` seconds — ``--max-retry-time`` — becomes
`RetryTimeExceeded`, which stops the worker with one clear line while the
messages stay in the queue. Receive, write, delete, extend and prune all use
it, so ``--max-retry-time`` means the same everywhere.

The budget is a deadline, not only a count of retries: `Retrier.call_within`
hands each attempt the seconds left before give-up, and the attempt cuts its
connect and read timeouts to them (`postgres.connect_timeout_within`,
`sqs.call_timeout_within`), so one hung attempt cannot carry the worker far
past the instant the operator set.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from login_etl.errors import RetryableError, RetryTimeExceeded

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Backoff:
    """Delay before the next attempt, doubling with ±10% jitter, clamped to the give-up time."""

    give_up_at: float
    initial: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.1
    delay: float = 0.0

    @classmethod
    def starting(cls, now: float, max_time: float, **kw: float) -> Backoff:
        """The state after a first failure at `now`, giving up `max_time` seconds later."""
        return cls(give_up_at=now + max_time, **kw)

    def update_delay(self, now: float, rand: Callable[[], float] = random.random) -> float:
        """Advance to the next delay and return it; `rand` gives a number in [0, 1)."""
        if self.delay == 0:
            base = self.initial
        else:
            base = min(self.cap, self.delay * self.factor)
        self.delay = base * (1 + self.jitter * (2 * rand() - 1))
        # Never sleep past the give-up instant: fail at the time the operator set.
        self.delay = max(0.0, min(self.delay, self.give_up_at - now))
        return self.delay

    def time_to_give_up(self, now: float) -> bool:
        """True once the failure has lasted past the give-up instant."""
        return now >= self.give_up_at

    def time_left(self, now: float) -> float:
        """Seconds from `now` to the give-up instant (0 once it has passed)."""
        return max(0.0, self.give_up_at - now)


class Retrier:
    """Calls functions under one policy shared by every stage of the worker.

    `on_retry(stage)` is told of each retry (a metric); `clock` is injectable
    so that tests can drive time.
    """

    def __init__(
        self,
        max_time: float,
        *,
        stop: threading.Event | None = None,
        on_retry: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_time = max_time
        self.stop = stop or threading.Event()
        self._on_retry = on_retry
        self._clock = clock

    def call(self, stage: str, fn: Callable[[], T]) -> T:
        """Return `fn()`, retrying RetryableError; raise RetryTimeExceeded when out of time.

        Once the stop event is set, a failure is not retried: shutting down
        must not wait out an outage.
        """
        return self.call_within(stage, lambda _seconds: fn())

    def call_within(self, stage: str, fn: Callable[[float], T]) -> T:
        """As `call`, giving each attempt the seconds it may take: `fn(seconds)`.

        `seconds` is the time left before this failure would be given up:
        ``max_time`` for a first attempt (an outage is counted from when its
        first failing call began), less for each retry. An attempt that bounds
        its connect and read timeouts by it ends near the give-up instant
        instead of at its client's own timeout.
        """
        backoff: Backoff | None = None
        while True:
            began = self._clock()
            seconds = self.max_time if backoff is None else backoff.time_left(began)
            try:
                return fn(seconds)
            except RetryableError as exc:
                backoff = self.failed(stage, exc, backoff, began=began)
                self.stop.wait(backoff.update_delay(self._clock()))

    def failed(
        self,
        stage: str,
        exc: RetryableError,
        backoff: Backoff | None,
        *,
        began: float | None = None,
    ) -> Backoff:
        """Record one failure of `stage`; return the backoff to wait on, or raise.

        The outage is counted from `began`, when the first failing call
        started: a call that hung for its whole timeout used up that time too.
        For loops that retry on their own schedule (the receivers and the
        heartbeat) but must give up at the same moment as everything else.
        """
        now = self._clock()
        backoff = backoff or Backoff.starting(now if began is None else began, self.max_time)
        if self.stop.is_set():
            raise RetryTimeExceeded(f"{stage}: stopped while failing: {exc}") from exc
        if backoff.time_to_give_up(now):
            raise RetryTimeExceeded(f"{stage}: gave up after {self.max_time:g}s: {exc}") from exc
        left = backoff.give_up_at - now
        log.warning(
            "%s failed, retrying (for up to %.0fs more of --max-retry-time %gs): %s",
            stage,
            left,
            self.max_time,
            exc,
            extra={"fields": {"stage": stage, "retry_seconds_left": round(left)}},
        )
        if self._on_retry is not None:
            self._on_retry(stage)
        return backoff
