"""Retrying transient failures with jittered exponential backoff.

Only `RetryableError` is retried; any other error passes through at once. A
failure that outlasts `max_time` seconds becomes `RetryTimeExceeded`, which
stops the worker with one clear line while the messages stay in the queue.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from login_etl.errors import RetryableError, RetryTimeExceeded

log = logging.getLogger(__name__)
T = TypeVar("T")


def backoff(attempt: int, *, base: float = 0.2, cap: float = 5.0) -> float:
    """Full-jitter delay before retry number `attempt` (0-based), in seconds."""
    return random.uniform(0, min(cap, base * 2**attempt))


def call_with_retry(
    what: str,
    fn: Callable[[], T],
    *,
    max_time: float,
    on_retry: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> T:
    """Call `fn` until it succeeds, retrying RetryableError for up to `max_time` seconds.

    `stop`, when set, cuts a backoff sleep short (the next failure then raises).
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except RetryableError as exc:
            if stop is not None and stop.is_set():
                raise RetryTimeExceeded(f"{what}: stopped while failing: {exc}") from exc
            if time.monotonic() - started > max_time:
                raise RetryTimeExceeded(f"{what}: gave up after {max_time:g}s: {exc}") from exc
            log.warning("%s failed, retrying: %s", what, exc)
            if on_retry is not None:
                on_retry()
            delay = backoff(attempt)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            attempt += 1
